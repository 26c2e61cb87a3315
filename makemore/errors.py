"""The errors users see: a bad input or setting, told in one line with its fix, and an interrupted sweep."""

from __future__ import annotations

import errno
import signal
import sys
from pathlib import Path
from typing import NoReturn

from omegaconf.errors import OmegaConfBaseException


class MakemoreError(Exception):
    """A problem with the user's data or config. Its message names the problem and the fix."""


class CannotWrite(MakemoreError):
    """A write the system refused (a full disk, a quota, a read-only or unwritable directory): the run stops where
    its last checkpoint stands, and continues from it once the disk has room."""

    def __init__(self, path: Path | str, cause: OSError):
        super().__init__(f"cannot write {path}: {(cause.strerror or str(cause)).lower()}")
        self.path = path


# What a full or closed disk answers a write with.
REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def refused_write(error: BaseException) -> OSError | None:
    """The refused write behind `error`, or None: the error itself, or an OSError it was raised over by a write's
    own errors (torch.save's RuntimeError over the file it could not write). Another error raised while one was
    being handled (an interrupt, say) is never taken for a write."""
    seen: BaseException | None = error
    while isinstance(seen, (OSError, RuntimeError)):
        if isinstance(seen, OSError) and seen.errno in REFUSED:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class PlanShown(Exception):
    """A multirun's plan was printed (hydra.launcher.plan=true): nothing trained, nothing was written."""


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
