"""A sweep's worker processes: none outlives its sweep, and one that dies is told apart from a failed member.

The sweep's process names itself in the environment (SWEEP_VARIABLE) before any worker starts, so every worker it
starts, whichever launcher's (the population's, joblib's loky, submitit's local processes), can tie its life to it:
the kernel's parent-death signal where the sweep's main thread started it (Linux), else a thread that watches
the parent. A worker killed so writes nothing more; what it left is what a `kill -9` leaves, which resume= and
continuing a sweep already take exactly.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import sys
import threading
import time

SWEEP_VARIABLE = "MAKEMORE_SWEEP_PROCESS"  # "<host> <pid>" of the sweep's process, for the workers it starts
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_SECONDS = 0.1  # how often a worker without the kernel's signal looks for its parent


def name_the_sweep() -> None:
    """In the sweep's own process, before it starts workers."""
    os.environ[SWEEP_VARIABLE] = f"{socket.gethostname()} {os.getpid()}"


def die_with_the_sweep(spawned_by_main_thread: bool = False) -> None:
    """In a worker of a sweep on this host: end (SIGKILL) when the sweep's process ends, however it ends. Nothing
    outside a sweep's worker, nor a process on another host (a SLURM job), is touched.

    The kernel's signal comes when the *thread* that started the worker ends, so it serves only workers the
    sweep's main thread starts (the population launcher's); joblib's may be started by an Optuna slot's thread,
    and watch their parent instead (within WATCH_SECONDS)."""
    named = os.environ.get(SWEEP_VARIABLE, "").split()
    if len(named) != 2 or named[0] != socket.gethostname() or int(named[1]) == os.getpid():
        return
    sweep = int(named[1])
    if os.getppid() != sweep:
        if not alive(sweep):  # the sweep ended before this worker got here
            os.kill(os.getpid(), signal.SIGKILL)
        return  # started by someone else (a process the sweep's worker started): its own parent's business
    if spawned_by_main_thread and sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=watch_parent, args=(sweep,), daemon=True).start()
    if os.getppid() != sweep:  # it ended between the two looks
        os.kill(os.getpid(), signal.SIGKILL)


def watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def how_it_died(error: BaseException) -> str:
    """What ended a worker, from the error its executor raised ("SIGKILL", "exit code 3"), for the one line."""
    found = re.search(r"\{(SIG[A-Z]+)\(", str(error))
    if found:
        return found.group(1)
    code = re.search(r"EXIT\((-?\d+)\)", str(error))
    return f"exit code {code.group(1)}" if code else "it ended"
