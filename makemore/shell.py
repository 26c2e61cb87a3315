"""Commands the project prints (rerun, resume, continue, suggestions), quoted so they work pasted into bash as shown."""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys

from hydra.errors import HydraException

SHELL_PLAIN = re.compile(r"[A-Za-z0-9_./=:,@%+-]+")  # bash passes these through unchanged, unquoted


@functools.lru_cache(maxsize=1)
def override_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def hydra_value(text: str) -> str:
    """`text` written so that Hydra's override parser reads it back as that exact string."""
    try:
        if override_parser().parse_override(f"key={text}").value() == text:
            return text
    except HydraException:
        pass
    # Inside double quotes Hydra takes every character literally but for quotes, backslashes before a quote,
    # and `${` (an interpolation).
    escaped = re.sub(r'(\\*)("|$)', lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), text)
    return '"' + escaped.replace("${", "\\${") + '"'


def shell_word(text: str) -> str:
    """`text` as one bash word: unquoted when bash would leave it alone, else single-quoted."""
    return text if SHELL_PLAIN.fullmatch(text) else shlex.quote(text)


def override(key: str, value: object) -> str:
    """`key=value` as one bash word that Hydra reads back as exactly that value."""
    return shell_word(f"{key}={hydra_value(str(value))}")


# How a user starts each program, by the file name Python is given (sys.argv[0]), and the program of the same
# install that trains one run: a checkout's scripts, the console scripts of an installed package, python -m makemore.
PROGRAMS = {
    "train.py": ("python train.py", "python train.py"),
    "sweep.py": ("python sweep.py", "python train.py"),
    "makemore-train": ("makemore-train", "makemore-train"),
    "makemore-sweep": ("makemore-sweep", "makemore-train"),
    "makemore/__main__.py": ("python -m makemore", "python -m makemore"),
    "evaluate.py": ("python -m makemore.evaluate", "python train.py"),
    "makemore-eval": ("makemore-eval", "makemore-train"),
    "ensemble.py": ("python -m makemore.ensemble", "python train.py"),
}


def program_name(argv0: str) -> str:
    """The key of PROGRAMS for sys.argv[0]: its file name, with its folder for a package's __main__.py."""
    path = argv0.replace(os.sep, "/").split("/")
    return "/".join(path[-2:]) if path[-1] == "__main__.py" else path[-1]


def program(argv0: str | None = None) -> str:
    """This process's command as its user typed it (`python sweep.py`, `makemore-train`, ...); a script of
    another name is `python <name>`."""
    name = program_name(sys.argv[0] if argv0 is None else argv0)
    return PROGRAMS[name][0] if name in PROGRAMS else f"python {name}"


def report_command(directory: object) -> str:
    """The command that writes the leaderboard of `directory`: `python sweep.py report=...` from a checkout,
    `makemore-sweep report=...` from an installed package."""
    checkout = program_name(sys.argv[0]) in ("train.py", "sweep.py")
    return f"{'python sweep.py' if checkout else 'makemore-sweep'} {override('report', directory)}"


def train_command(key: str, value: object) -> str:
    """`python train.py key=value` (or `makemore-train ...`, `python -m makemore ...`, as this process was
    started), quoted so that it works when pasted into bash as printed."""
    _, trainer = PROGRAMS.get(program_name(sys.argv[0]), PROGRAMS["train.py"])
    return f"{trainer} {override(key, value)}"


def rescore_command(record_dir: object) -> str:
    """The command that scores an ensemble's record again (makemore.ensemble --rescore), quoted for bash."""
    return f"python -m makemore.ensemble --rescore {shell_word(str(record_dir))}"
