"""A sweep's worker processes: none outlives its sweep, and one that dies is told apart from a failed member.

The sweep's process names itself in the environment (SWEEP_VARIABLE) before any worker starts, so every worker it
starts, whichever launcher's (the population's, joblib's loky, submitit's local processes), can tie its life to it:
the kernel's parent-death signal where the sweep's main thread started it (Linux), else a thread that watches
the parent. A worker killed so writes nothing more; what it left is what a `kill -9` leaves, which resume= and
continuing a sweep already take exactly.

Where fork() is safe (Linux, and the sweep's process runs no other thread), a population's worker is forked from the
sweep's process (ForkedWorker): it starts in milliseconds with the sweep's imports, where a fresh process spends
~1.5 s importing torch, and it ends without Python's teardown of torch (~0.7 s), as every command does (end_process).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pickle
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NoReturn

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


def fork_is_safe() -> bool:
    """Whether this process may fork a worker that goes on to run Python and torch: fork() copies only the calling
    thread, and with it any lock another thread holds (an OpenMP team, an executor's or a progress bar's thread),
    and CUDA refuses a child forked after its parent started it."""
    one_thread = sys.platform.startswith("linux") and len(os.listdir("/proc/self/task")) == 1
    torch = sys.modules.get("torch")  # not imported: CUDA not started
    return one_thread and not (torch and torch.cuda.is_initialized())


class WorkerLost(BrokenProcessPool):
    """A forked worker ended without its result: `how` it ended ("SIGKILL", "exit code 3")."""

    def __init__(self, how: str):
        super().__init__(f"the worker process ended ({how}) before it returned")
        self.how = how


class ForkedWorker:
    """`function(*args)` in a process forked from this one (where fork_is_safe), as a future: done() and result().
    The result, or the error raised, comes back pickled in the file `result`; a death is told by the exit status."""

    def __init__(self, result: Path, function: Callable[..., Any], *args: Any):
        self.path, self.status = result, None
        self.path.unlink(missing_ok=True)  # a dead predecessor's leftovers are not this worker's answer
        for stream in (sys.stdout, sys.stderr):  # what is buffered would be written twice, once by each process
            stream.flush()
        self.pid = os.fork()
        if self.pid == 0:
            run_forked(result, function, args)

    def done(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            self.status = status if pid else None
        return self.status is not None

    def result(self) -> Any:
        """What the function returned; the error it raised; WorkerLost if the process ended without either."""
        if self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]
        if os.WIFSIGNALED(self.status):
            raise WorkerLost(signal.Signals(os.WTERMSIG(self.status)).name)
        if os.waitstatus_to_exitcode(self.status) or not self.path.is_file():
            raise WorkerLost(f"exit code {os.waitstatus_to_exitcode(self.status)}")
        returned, value = pickle.loads(self.path.read_bytes())
        self.path.unlink()
        if not returned:
            raise value
        return value


def run_forked(result: Path, function: Callable[..., Any], args: tuple) -> NoReturn:
    """The forked worker: signals as a fresh process has them, its life tied to the sweep's, the function's outcome
    written whole (a reader never sees half a file), and its end as a run's (end_process), never a
    return into the sweep's code."""
    code = 1
    try:
        atexit._clear()  # the sweep's exit calls are the sweep's (its temporary directories, its executors)
        for number in (signal.SIGTERM, getattr(signal, "SIGUSR2", signal.SIGTERM)):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        die_with_the_sweep(spawned_by_main_thread=True)
        try:
            outcome = (True, function(*args))
        except BaseException as error:  # the sweep raises it, as an executor's result() would
            outcome = (False, error)
        import cloudpickle

        try:  # as loky sends one: by value what pickle cannot name (a user's class, or one loaded twice)
            answer = cloudpickle.dumps(outcome)
        except Exception as error:
            answer = pickle.dumps((False, RuntimeError(f"the worker's outcome could not be pickled ({error})")))
        partial = result.with_suffix(".partial")
        partial.write_bytes(answer)
        partial.replace(result)
        code = 0
    except BaseException:  # no outcome written (a full disk): the sweep is told "exit code 1", and this says why
        traceback.print_exc()
    finally:
        end_process(code)


def end_process(code: int) -> NoReturn:
    """Exit with `code` as Python's own exit would, less its teardown of every module's objects (~0.15 s once torch
    is imported, paid by each of a sweep's and the test suite's processes): Python's own first two steps, then
    the streams flushed, and only then the process ends."""
    threading._shutdown()  # the executors' exit calls (joblib's workers joined), then every non-daemon thread joined
    atexit._run_exitfuncs()  # logging's files, W&B's and MLflow's runs, temporary directories
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, or a stream already closed: nothing more to say
            pass
    os._exit(code)


def how_it_died(error: BaseException) -> str:
    """What ended a worker, from the error its executor raised ("SIGKILL", "exit code 3"), for the one line."""
    if isinstance(error, WorkerLost):
        return error.how
    found = re.search(r"\{(SIG[A-Z]+)\(", str(error))
    if found:
        return found.group(1)
    code = re.search(r"EXIT\((-?\d+)\)", str(error))
    return f"exit code {code.group(1)}" if code else "it ended"
