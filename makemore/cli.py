"""The command line and how a run ends: every refusal as one `error:` line, the exit-code and status policy,
`seeds=N`, and the command that continues an interrupted sweep."""

from __future__ import annotations

import gc
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from makemore import lock, timeline
from makemore.errors import (
    CannotWrite,
    MakemoreError,
    PlanShown,
    SweepInterrupted,
    one_line,
    refuse,
    refused_write,
)
from makemore.loop import Diverged, Interrupted
from makemore.provenance import COMMAND_VARIABLE, typed_command
from makemore.redact import passwords_moved_out
from makemore.rundir import METRICS, write_json
from makemore.search import Pruned
from makemore.settings import Settings
from makemore.shell import override, override_parser, program, shell_word, train_command
from makemore.workers import end_process


def run_app(main: Callable[[], object], help_shows: str | None = None) -> int:
    """Run a `@hydra.main` function; a config Hydra refuses, or one we refuse, ends in one `error:` line and exit 1.

    Hydra prints its own refusals over several lines; with HYDRA_FULL_ERROR it raises them instead, so they
    can be told in one line here. A user who set HYDRA_FULL_ERROR=1 keeps the full traceback. `help_shows`: an
    override that --help composes with, where the config has a group that must be chosen (sweep.py's sweep).
    """
    timeline.mark("imported")
    gc.freeze()  # the imports' objects (torch's are most) live until the end: the collector need never look at them
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    logging.raiseExceptions = False  # a log line a full disk refuses is lost, not a traceback (the run says why)
    try:
        sys.argv[1:] = passwords_moved_out(sys.argv[1:])  # before anything records or prints the command
        os.environ[COMMAND_VARIABLE] = typed_command(sys.argv)
        sys.argv[1:] = sweep_is_multirun(expand_seeds(sys.argv[1:]))
        if help_shows and {"--help", "-h"} & set(sys.argv[1:]):
            key = help_shows.split("=", 1)[0]
            sys.argv += [] if any(a.startswith(f"{key}=") for a in sys.argv[1:]) else [help_shows]
        main()
        timeline.mark("returned")
    except (MakemoreError, HydraException, OmegaConfBaseException) as e:
        if wants_traceback:
            raise
        refuse(MakemoreError(f"{one_line(e)}; {quoting_hint(sys.argv[1:])}") if unparsable(sys.argv[1:]) else e)
    except PlanShown:
        return 0
    except SweepInterrupted as e:  # Ctrl-C or SIGTERM stopped a sweep (a single run exits on its own)
        print(f"sweep interrupted; continue it with: {continue_command(str(e.sweep_dir))}", file=sys.stderr)
        return 128 + e.signum  # as a shell reports a process its signal stopped
    finally:
        gc.freeze()  # nor at the exit, where collecting them would cost ~0.4 s (what's open still closes)
    return 0


def exit_after(command: Callable[[], int | None]) -> NoReturn:
    """Run `command` and end the process with its exit status, or its SystemExit's (a refusal's), by end_process."""
    try:
        code = command()
    except SystemExit as stop:
        if stop.code is not None and not isinstance(stop.code, int):
            raise  # a message: Python's own exit prints it
        code = stop.code
    end_process(code or 0)


def unparsable(args: list[str]) -> list[str]:
    """The overrides among `args` that Hydra's grammar cannot read (a value with `=`, brackets, quotes, ...)."""
    bad = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override_parser().parse_override(arg)
        except HydraException:
            bad.append(arg)
    return bad


def quoting_hint(args: list[str]) -> str:
    """How to write the first unreadable override so that Hydra reads the value as typed."""
    key, _, value = unparsable(args)[0].partition("=")
    return f"to pass the value as typed, quote it for Hydra inside the shell's quotes: {override(key, value)}"


def expand_seeds(args: list[str]) -> list[str]:
    """`seeds=N` runs every config of the command with N seeds, seed, seed+1, ... (seed defaults to 42), each in
    its own run directory: it becomes the multirun sweep `seed=42,43,44`."""
    counts = [a.split("=", 1)[1] for a in args if a.startswith("seeds=")]
    if not counts:
        return args
    seeds = [a.split("=", 1)[1] for a in args if a.startswith("seed=")]
    if not counts[-1].isdigit() or int(counts[-1]) < 1 or (seeds and not seeds[-1].isdigit()):
        raise MakemoreError(
            f"seeds={counts[-1]} is not allowed: seeds must be a positive integer, with seed= "
            "(the first seed) a single integer, e.g. seeds=3 seed=42"
        )
    first, count = int(seeds[-1]) if seeds else Settings.seed, int(counts[-1])
    others = [a for a in args if not a.startswith(("seeds=", "seed="))]
    if count == 1:
        return others + [f"seed={first}"]
    multirun = [] if {"-m", "--multirun"} & set(others) else ["-m"]
    return multirun + others + ["seed=" + ",".join(str(first + i) for i in range(count))]


# Hydra's flags that pick what it does (run, multirun, print the config, help, ...): it takes one at a time.
HYDRA_MODES = {"-m", "--multirun", "-r", "--run", "-c", "--cfg", "-i", "--info", "-h", "--help", "--hydra-help"}
HYDRA_MODES |= {"-sc", "--shell-completion"}


def sweep_is_multirun(args: list[str]) -> list[str]:
    """`python train.py sweep=<name>` runs that named sweep: a multirun, as `python sweep.py sweep=<name>` is
    (Hydra 1.4 takes the mode only from the primary config or the command line, not from a sweep's preset)."""
    named = any(a.startswith("sweep=") and a != "sweep=null" for a in args)
    return ["-m", *args] if named and not HYDRA_MODES & set(args) else args


def continue_command(directory: str) -> str:
    """This process's command again, pointed at its sweep directory: finished members are kept, interrupted
    ones continue from their checkpoints, the rest run (an Optuna search continues its study)."""
    args = [a for a in sys.argv[1:] if not a.startswith("hydra.sweep.dir=")]
    words = [shell_word(a) for a in args] + [override("hydra.sweep.dir", directory)]
    return " ".join([program(), *words])


def handed_to_the_scheduler(error: Interrupted, run_dir: Path, sweep_dir: Path | None) -> float:
    """A scheduler's timeout warning (submitit's SIGUSR2), after the checkpoint: its own handler requeues the job,
    which resumes from that checkpoint, and exits. With no requeue left the run stays `interrupted`, never failed:
    continuing the sweep resumes it."""
    try:
        error.scheduler(error.signum, None)
    except Exception as e:  # submitit's UncompletedJobError: timed out too many times
        print(f"{run_dir.name}: not requeued ({e}); it stays interrupted, and continuing the sweep resumes it")
    if sweep_dir:
        return math.inf
    sys.exit(128 + error.signum)


def settle_stopped_run(error: Exception, run_dir: Path, sweep_dir: Path | None) -> float:
    """The exit-code and status policy for a run that `error` stopped; a sweep member's result for its sweeper.

    Pruned: a result, not a failure. A bug in a single run keeps its traceback; anything else is one `error:`
    line, a status in metrics.json (never over a finished run's) and exit 1, or 128 + the signal for an
    interrupted run. In a sweep a failed member is recorded and the sweep goes on; an interrupt stops it.
    """
    error = as_cannot_write(error, run_dir)
    reason = record_end(error, run_dir)
    if isinstance(error, Pruned):
        return math.inf
    if not (isinstance(error, MakemoreError) or sweep_dir):
        raise error  # a bug in a single run deserves its traceback (its run is marked failed all the same)
    print(f"error: {reason}", file=sys.stderr)
    if isinstance(error, Interrupted) and error.scheduler:
        return handed_to_the_scheduler(error, run_dir, sweep_dir)
    if isinstance(error, Interrupted):
        if sweep_dir:
            raise SweepInterrupted(sweep_dir, error.signum) from None  # stops the whole sweep, not just this member
        sys.exit(128 + error.signum)
    if sweep_dir:
        return math.inf  # the sweep records this member as failed and goes on
    sys.exit(1)


def as_cannot_write(error: Exception, run_dir: Path) -> Exception:
    """`error`, or the refused write behind it (of history.csv, an event file, the samples) as CannotWrite."""
    refused = refused_write(error)
    if refused and not isinstance(error, CannotWrite):
        return CannotWrite(refused.filename or run_dir, refused)
    return error


def record_end(error: Exception, run_dir: Path) -> str:
    """Write how `error` ended the run into its metrics.json: pruned (a result), diverged, interrupted (with the
    command that continues it) or failed, never over a finished run's result. Returns the reason, one line."""
    if isinstance(error, Pruned):
        write_json(
            run_dir / METRICS,
            {
                "status": f"pruned at step {error.step}",
                "pruned_at_step": error.step,
                "dev_loss_at_prune": error.dev_loss,
                "train_seconds": error.train_seconds,
            },
        )
        print(f"trial {error.trial} {error}")
        return str(error)
    if isinstance(error, lock.Busy):  # the directory is another process's to write
        return str(error)
    error = as_cannot_write(error, run_dir)
    status = {Diverged: "diverged", Interrupted: "interrupted", CannotWrite: "interrupted"}.get(type(error), "failed")
    reason = str(error) if isinstance(error, MakemoreError) else f"{type(error).__name__}: {error}"
    if status == "interrupted":
        room = "make room on its disk (or make it writable), then " if isinstance(error, CannotWrite) else ""
        reason += f"; {room}continue with {train_command('resume', run_dir)}"
    if run_dir.is_dir() and (not (run_dir / METRICS).exists() or status != "failed"):  # a finished run's result stays
        try:
            write_json(run_dir / METRICS, {"status": status, "error": reason})
        except CannotWrite:
            pass  # the disk that stopped the run takes no record either: the line printed is the record
    return reason
