"""One writer per run: the process that writes a run (or a grid sweep's directory) holds its lock, and a second
process is refused in one line that names the holder.

The lock is an flock on `<dir>/.lock`, which the kernel lets go when its process ends however it ends (SIGKILL
included), so a lock left by a dead process is taken over without asking; the file holds the holder's PID and
host, for the refusal, and is removed when its holder lets go.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from makemore.errors import MakemoreError

LOCK = ".lock"
held: dict[Path, int] = {}  # directory -> the open lock file this process holds it by


class Busy(MakemoreError):
    """Another live process writes the directory: nothing of it may be touched, not even to record this refusal."""


def hold(directory: Path) -> None:
    """Take `directory`'s lock for this process (made if need be), or refuse: another live process writes it."""
    directory = directory.resolve()
    if directory in held:
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").split()
            os.close(descriptor)
            raise Busy(refusal(directory, holder)) from None
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(descriptor).st_ino:
            break  # not a file its last holder removed while this process opened it
        os.close(descriptor)
    held[directory] = descriptor
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except OSError:
        pass  # a full disk: the lock holds all the same, a refusal names no holder


def busy(directory: Path) -> bool:
    """Whether another live process holds `directory`'s lock (a member another Optuna process is training)."""
    path = directory / LOCK
    if directory.resolve() in held or not path.is_file():
        return False
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # its holder let go just now
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def refusal(directory: Path, holder: list[str]) -> str:
    who = f"process {holder[0]} on {holder[1]}" if len(holder) == 2 else "another process"
    stop = f"stop it (kill {holder[0]})" if len(holder) == 2 else "stop it"
    return (
        f"{directory} is being written by {who}: one process writes a run at a time; wait for it to end, or "
        f"{stop} and run this command again (its checkpoint is whole)"
    )


def release(directory: Path) -> None:
    """Let go of `directory`'s lock, and remove the lock file: a run's record keeps none."""
    descriptor = held.pop(directory.resolve(), None)
    if descriptor is not None:
        Path(directory, LOCK).unlink(missing_ok=True)
        os.close(descriptor)


@contextlib.contextmanager
def holding(directory: Path) -> Iterator[None]:
    """`directory`'s lock while the block writes it."""
    hold(directory)
    try:
        yield
    finally:
        release(directory)


@atexit.register
def release_all() -> None:
    for directory in list(held):
        release(directory)
