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


def run_app(main: Callable[[], object]) -> int:
    """Run a `@hydra.main` function; a config Hydra refuses, or one we refuse, ends in one `error:` line and exit 1.

    Hydra prints its own refusals over several lines; with HYDRA_FULL_ERROR it raises them instead, so they
    can be told in one line here. A user who set HYDRA_FULL_ERROR=1 keeps the full traceback.
    """
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (MakemoreError, HydraException, OmegaConfBaseException) as e:
        if wants_traceback:
            raise
        refuse(e)
    return 0


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
