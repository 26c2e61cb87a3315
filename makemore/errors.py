"""The errors users see: a bad input or setting, told in one line with its fix, and an interrupted sweep."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import NoReturn

from omegaconf.errors import OmegaConfBaseException


class MakemoreError(Exception):
    """A problem with the user's data or config. Its message names the problem and the fix."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the sweep in `sweep_dir`: the command line prints how to continue it."""

    def __init__(self, sweep_dir: Path, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.sweep_dir, self.signum = sweep_dir, signum


def stop_sweep_on_signals(sweep_dir: Path) -> None:
    """In a sweep's process, Ctrl-C and SIGTERM raise SweepInterrupted (a run in training saves first: its loop
    holds the signals meanwhile), so any launcher's sweep stops with the command that continues it."""

    def interrupt(signum: int, frame: object) -> None:
        raise SweepInterrupted(sweep_dir, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def refuse(error: Exception) -> NoReturn:
    """Print `error: <one line>` and exit 1. A SystemExit: Hydra's callbacks turn any Exception into a warning."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    raise SystemExit(1)


def one_line(error: BaseException) -> str:
    """An exception and the OmegaConf error behind it, as one line (Hydra's are several)."""
    parts = [error] + ([error.__cause__] if isinstance(error.__cause__, OmegaConfBaseException) else [])
    lines = [line.strip() for part in parts for line in str(part).splitlines()]
    return "; ".join(
        line.rstrip(".:") for line in lines if line and not line.startswith(("object_type", "reference_type"))
    )
