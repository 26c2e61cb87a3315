"""The command line: every refusal as one `error:` line, and printed commands that paste into bash as shown."""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import NoReturn

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from makemore.errors import MakemoreError

SHELL_PLAIN = re.compile(r"[A-Za-z0-9_./=:,@%+-]+")  # bash passes these through unchanged, unquoted
# The directory of the sweep this process runs, once its check passed (makemore.record): Ctrl-C prints the
# command that continues it.
sweep_dir: list[str] = []


def run_app(main: Callable[[], object]) -> int:
    """Run a `@hydra.main` function; a config Hydra refuses, or one we refuse, ends in one `error:` line and exit 1.

    Hydra prints its own refusals over several lines; with HYDRA_FULL_ERROR it raises them instead, so they
    can be told in one line here. A user who set HYDRA_FULL_ERROR=1 keeps the full traceback.
    """
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        sys.argv[1:] = expand_seeds(sys.argv[1:])
        main()
    except (MakemoreError, HydraException, OmegaConfBaseException) as e:
        if wants_traceback:
            raise
        refuse(e)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM stopped a sweep (a single run exits on its own)
        if not sweep_dir:
            raise
        print(f"sweep interrupted; continue it with: {continue_command(sweep_dir[-1])}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    return 0


def expand_seeds(args: list[str]) -> list[str]:
    """`seeds=N` runs every config of the command with N seeds, seed, seed+1, ... (seed defaults to 42), each in
    its own run directory: it becomes the multirun sweep `seed=42,43,44`."""
    counts = [a.split("=", 1)[1] for a in args if a.startswith("seeds=")]
    if not counts:
        return args
    seeds = [a.split("=", 1)[1] for a in args if a.startswith("seed=")]
    if not counts[-1].isdigit() or int(counts[-1]) < 1 or (seeds and not seeds[-1].isdigit()):
        raise MakemoreError(f"seeds={counts[-1]} is not allowed: seeds must be a positive integer, with seed= "
                            "(the first seed) a single integer, e.g. seeds=3 seed=42")
    first, count = int(seeds[-1]) if seeds else 42, int(counts[-1])
    others = [a for a in args if not a.startswith(("seeds=", "seed="))]
    if count == 1:
        return others + [f"seed={first}"]
    multirun = [] if {"-m", "--multirun"} & set(others) else ["-m"]
    return multirun + others + ["seed=" + ",".join(str(first + i) for i in range(count))]


def continue_command(directory: str) -> str:
    """This process's command again, pointed at its sweep directory: finished members are kept, interrupted
    ones continue from their checkpoints, the rest run (an Optuna search continues its study)."""
    args = [a for a in sys.argv[1:] if not a.startswith("hydra.sweep.dir=")]
    words = [shell_word(a) for a in args] + [override("hydra.sweep.dir", directory)]
    return " ".join(["python", os.path.basename(sys.argv[0]), *words])


def refuse(error: Exception) -> NoReturn:
    """Print `error: <one line>` and exit 1. A SystemExit: Hydra's callbacks turn any Exception into a warning."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    raise SystemExit(1)


def one_line(error: BaseException) -> str:
    """An exception and the OmegaConf error behind it, as one line (Hydra's are several)."""
    parts = [error] + ([error.__cause__] if isinstance(error.__cause__, OmegaConfBaseException) else [])
    lines = [line.strip() for part in parts for line in str(part).splitlines()]
    return "; ".join(line.rstrip(".:") for line in lines if line and not line.startswith(("object_type", "reference_type")))


@functools.lru_cache(maxsize=1)
def _override_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def hydra_value(text: str) -> str:
    """`text` written so that Hydra's override parser reads it back as that exact string."""
    try:
        if _override_parser().parse_override(f"key={text}").value() == text:
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


def train_command(key: str, value: object) -> str:
    """`python train.py key=value`, quoted so that it works when pasted into bash as printed."""
    return f"python train.py {override(key, value)}"
