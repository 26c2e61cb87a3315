"""`hydra/launcher=population`: a sweep's members of one shape train together as one stacked population
(makemore.population), each still a run of its own.

A population is split into shards, one per worker process (on a CPU, one per core, each on one thread: a
process's Python and its small kernels run beside the other's, where two threads of one process would wait on each
other). In each shard, Hydra writes each member's record and calls its job callbacks through its own run_job, in
a thread per member that prepares the member's run and waits while the shard trains in the process's main thread
(where signals arrive); the threads end one by one, the last started first, as nested run_jobs would. Members that
stack with nobody run one after another through Hydra's basic launcher. makemore.grouping decides who stacks.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.makemore_population.config import PopulationLauncherConf  # noqa: F401  (registers the settings)
from makemore import grouping, lock, timeline
from makemore.checkpoint import load_checkpoint
from makemore.cli import continue_command, record_end
from makemore.derived_configs import ComposeOncePerShape
from makemore.errors import MakemoreError, PlanShown, SweepInterrupted
from makemore.hydra_versions import configure_console_log, job_id
from makemore.loggers import writes_tensorboard
from makemore.loop import STOP_SIGNALS, Interrupted, Tally
from makemore.population import probe, progress_bar, train_population, write_population_record
from makemore.rundir import CHECKPOINT, METRICS, ended_metrics, read_metrics, write_json
from makemore.search import Pruned
from makemore.train import reporter_for, start, sweep_member
from makemore.workers import ForkedWorker, die_with_the_sweep, fork_is_safe, how_it_died

# Member-steps a population needs before it is split among worker processes, by how they start: forked from the sweep's
# process (makemore.workers), at once, or where a fork is not safe, spawned (loky's), ~2 s each to import torch. The
# default MLP takes ~0.4 s of one core for 1,000 steps, ~8 s for 20,000; below, the population trains in this process.
WORKER_STEPS = {"forked": 1_000, "spawned": 20_000}
WORKER_START = {"forked": 0.05, "spawned": 2.5}  # seconds a worker process takes to start, for the plan's estimate
POLL = 0.05  # seconds between looks at the workers: their progress, their ends, signals to pass on


class PopulationLauncher(Launcher):
    """`hydra.launcher`: max_members, workers, max_failures, plan, fail_fast
    (hydra_plugins/makemore_population/config.py)."""

    def __init__(
        self,
        max_members: int = 16,
        workers: int | None = None,
        max_failures: int = 1,
        plan: bool = False,
        fail_fast: bool = False,
    ) -> None:
        self.max_members, self.workers, self.max_failures = max_members, workers, max_failures
        self.plan, self.fail_fast = plan, fail_fast
        self.cores = len(os.sched_getaffinity(0))
        self.basic = BasicLauncher()
        self.slots: list = []  # worker processes, each its own executor: one's death breaks no other's

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        loader = hydra_context.config_loader  # it goes to the workers too: they compose nothing more
        loader.load_sweep_config = ComposeOncePerShape(loader, config)

    def processes(self, unit: grouping.Population) -> int:
        """Worker processes for a population: `workers`, or by default one per core on a CPU when its work pays for
        starting them (WORKER_STEPS), else its own process (and one drives a GPU); at most one per trial."""
        if self.workers:
            return min(self.workers, len(trials(unit)))
        config = unit.members[0].config
        steps = sum(OmegaConf.select(m.config, "steps") - m.start for m in unit.members)
        cpu = OmegaConf.select(config, "device") == "cpu"
        return min(self.cores, len(trials(unit))) if cpu and steps >= WORKER_STEPS[worker_start()] else 1

    def slot(self, number: int, fresh: bool = False):
        """Worker process `number`: a loky executor of one worker (as hydra/launcher=joblib's are), kept for the
        sweep's next launch; `fresh`, a new one in place of a worker that died. Each worker ends with the sweep."""
        from joblib.externals.loky import ProcessPoolExecutor

        while len(self.slots) <= number:
            self.slots.append(None)
        if fresh or self.slots[number] is None:
            started_here = functools.partial(die_with_the_sweep, spawned_by_main_thread=True)  # launch() runs there
            self.slots[number] = ProcessPoolExecutor(max_workers=1, initializer=started_here)
        return self.slots[number]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_console_log(self.config, self.hydra_context)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        members, kept = [], []
        for number, overrides in enumerate(job_overrides, initial_job_idx):
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = job_id(number)
                config.hydra.job.num = number
            name = str(OmegaConf.select(config, "hydra.sweep.subdir"))
            member = grouping.Member(number, name, config, start_step(sweep_dir / name))
            (kept if ended_metrics(sweep_dir / name) else members).append(member)
        timeline.mark("members composed")
        units = grouping.plan(members, self.max_members) + [grouping.Alone(m, "it ended earlier") for m in kept]
        units.sort(key=first_index)
        planned = [u for u in units if not (isinstance(u, grouping.Alone) and u.member in kept)]
        for line in grouping.lines(planned):
            print(line, flush=True)
        timeline.mark("populations planned")
        if self.plan:
            self.show_plan(planned)
            raise PlanShown()
        returns: dict[int, JobReturn] = {}
        populations = [u for u in units if isinstance(u, grouping.Population)]
        for unit in units:
            if isinstance(unit, grouping.Alone):
                overrides = job_overrides[unit.member.index - initial_job_idx]
                returns[unit.member.index] = self.basic.launch([overrides], unit.member.index)[0]
            else:
                title = f"population {populations.index(unit) + 1} of {len(populations)}"
                returns.update(self.train(unit, sweep_dir, title))
            if self.fail_fast and any(unit is fresh for fresh in planned):  # not kept from an earlier session
                stop_at_a_failure(unit, sweep_dir)
        return [returns[number] for number in range(initial_job_idx, initial_job_idx + len(job_overrides))]

    def show_plan(self, units: list[grouping.Population | grouping.Alone]) -> None:
        """What the launch would train: member-steps, processes and the wall time that a short probe of each
        population (and lone member) on one process's share of its members estimates; then the total."""
        total_steps, total_seconds = 0, 0.0
        probed: dict[str, tuple[float, float]] = {}  # units of one shape and size take the same time: probed once
        for unit in units:
            members = unit.members if isinstance(unit, grouping.Population) else [unit.member]
            count = self.processes(unit) if isinstance(unit, grouping.Population) else 1
            steps = [OmegaConf.select(m.config, "steps") - m.start for m in members]
            share = [m.config for m in members[: math.ceil(len(members) / count)]]
            shape = repr((len(share), sorted(grouping.shape_key(grouping.task_values(share[0])).items(), key=str)))
            if shape not in probed:
                probed[shape] = probe(share)
            per_step, rest = probed[shape]
            seconds = max(steps) * per_step + rest + (WORKER_START[worker_start()] if count > 1 else 0)
            total_steps, total_seconds = total_steps + sum(steps), total_seconds + seconds
            names = members[0].name if len(members) == 1 else f"{members[0].name} ... {members[-1].name}"
            print(
                f"  {names}: {sum(steps):,} member-steps in {count} process{'es' * (count > 1)}, ~{seconds:,.0f} s "
                f"({per_step * 1000:.2f} ms a step, {rest:.1f} s to start and end)"
            )
        print(f"plan: {total_steps:,} member-steps, ~{total_seconds:,.0f} s of wall time (estimated); nothing was run")

    def train(self, unit: grouping.Population, sweep_dir: Path, title: str) -> dict[int, JobReturn]:
        """One population: in this process, or split into shards that train in worker processes side by side."""
        count = self.processes(unit)
        threads = OmegaConf.select(unit.members[0].config, "threads")  # the members' own, as their solo runs
        population = {
            "size": len(unit.members),
            "members": [m.name for m in unit.members],
            "engine": unit.engine,
            "differ": unit.differ,
            "processes": count,
            "threads": threads,
        }
        shards = [
            Shard(number, [m.config for trial in trials(unit)[number::count] for m in trial], population, threads)
            for number in range(count)  # trials dealt round-robin: each shard's share of every kind of member
        ]
        last = max(OmegaConf.select(m.config, "steps") for m in unit.members)
        first = min(m.start for m in unit.members)
        shown = any(OmegaConf.select(m.config, "progress") for m in unit.members)
        with progress_bar(title, first, last, shown) as bar:
            if count == 1:
                returns, stopped = shards[0].run(self.hydra_context, self.config, shown_on(bar))
            else:
                returns, stopped = self.in_workers(shards, bar, sweep_dir)
        if stopped:
            raise SweepInterrupted(sweep_dir, stopped)
        return returns

    def in_workers(self, shards: list[Shard], bar, sweep_dir: Path) -> tuple[dict[int, JobReturn], int | None]:
        """The shards in worker processes, one bar for them all. A stop signal this process gets goes on to the
        workers, which checkpoint their members. A worker that dies (SIGKILL, the OOM killer, a segfault) costs its
        members a restart from their checkpoints in a fresh worker, up to max_failures times; past that they are
        recorded interrupted and the others go on (continuing the sweep resumes them)."""
        imported_once(self.config)
        state = Singleton.get_state()
        returns: dict[int, JobReturn] = {}
        with tempfile.TemporaryDirectory(prefix="makemore-population-") as board:
            running = {shard.number: self.submit(shard, state, board) for shard in shards}
            by_number, losses = {shard.number: shard for shard in shards}, dict.fromkeys(running, 0)
            arrived: list[int] = []
            previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in STOP_SIGNALS}
            told: dict[int, int] = {}  # the signals each worker was sent so far
            stopped = None
            try:
                while running:
                    progress = read_board(board)
                    for pid in (p["pid"] for p in progress):  # `kill` and a scheduler signal this process only
                        for signum in arrived[told.get(pid, 0) :]:
                            os.kill(pid, signum)
                        told[pid] = len(arrived)
                    show(bar, progress)
                    for number in [n for n, future in running.items() if future.done()]:
                        shard = by_number[number]
                        try:
                            shard_returns, signum = running.pop(number).result()
                        except BrokenProcessPool as error:  # its worker died (WorkerLost, loky's TerminatedWorkerError)
                            if arrived:  # the signal stopped it before its members trained: nothing of theirs to keep
                                continue
                            losses[number] += 1
                            worker = next((p["pid"] for p in progress if p["number"] == number), None)
                            Path(board, f"{number}.json").unlink(missing_ok=True)
                            if losses[number] <= self.max_failures:
                                print(lost_line(shard, worker, error, self.restart(losses[number])), flush=True)
                                running[number] = self.submit(shard, state, board, fresh=True)
                            else:
                                returns.update(self.lost(shard, sweep_dir, worker, error))
                            continue
                        returns.update(shard.job_returns(shard_returns, sweep_dir))
                        stopped = stopped or signum
                    time.sleep(POLL)
                show(bar, read_board(board))
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
        return returns, stopped or (arrived[0] if arrived else None)

    def submit(self, shard: Shard, state: dict, board: str, fresh: bool = False):
        """The shard to its worker, forked from this process where that is safe, else a loky worker (`fresh`: a new
        one, in place of one that died); its future."""
        arguments = (shard, self.hydra_context, self.config, state, board)
        if fork_is_safe():
            return ForkedWorker(Path(board, f"{shard.number}.pickle"), train_shard, *arguments)
        return self.slot(shard.number, fresh).submit(train_shard, *arguments)

    def restart(self, times: int) -> str:
        return f"restart from their checkpoints (restart {times} of {self.max_failures})"

    def lost(self, shard: Shard, sweep_dir: Path, worker: int | None, error: BaseException) -> dict[int, JobReturn]:
        """A shard whose worker died once too often: its unfinished members recorded interrupted (their checkpoints
        stay; continuing the sweep resumes them), each a job that returns inf, as a failed member does."""
        spent = f"max_failures={self.max_failures} restarts, all spent"
        print(lost_line(shard, worker, error, f"stay interrupted ({spent})"), flush=True)
        returns = {}
        for config in shard.configs:
            run_dir = sweep_dir / str(OmegaConf.select(config, "hydra.sweep.subdir"))
            if not ended_metrics(run_dir):
                reason = f"its worker process was lost ({how_it_died(error)}, {spent}); continuing the sweep resumes it"
                write_json(run_dir / METRICS, {"status": "interrupted", "error": reason})
            returns[int(config.hydra.job.num)] = job_return(config, run_dir, math.inf)
        return returns


class Shard:
    """Some members of one population, trained together in one process: their composed configs, the population's
    record, and torch's threads. (No dataclass: Hydra's plugin scan runs this module outside sys.modules.)"""

    def __init__(self, number: int, configs: list[DictConfig], population: dict, threads: int):
        self.number, self.configs, self.population, self.threads = number, configs, population, threads

    def run(self, hydra_context: HydraContext, config: DictConfig, progress) -> tuple[dict[int, JobReturn], int | None]:
        """Each member's Hydra job, trained together: their job returns by index, and the signal that stopped them,
        if one did."""
        data: dict = {}  # the members' data, read and cut once (makemore.train.run_data)
        jobs = [MemberJob(hydra_context, c, data) for c in self.configs]
        outcomes: list = []
        try:
            for job in jobs:
                job.start()
                job.started.wait()
            configure_console_log(config, hydra_context)  # the population's lines to the console, not a member's log
            ready = [j for j in jobs if j.prepared is not None]
            for job in ready:
                index = self.population["members"].index(job.prepared.run_dir.name)
                write_population_record(job.prepared.run_dir, {**self.population, "index": index})
            for together in by_start(ready):  # one start, unless a worker died between its members' checkpoints
                parts = ("prepared", "resume", "reporter")
                runs, resumes, reporters = ([getattr(j, part) for j in together] for part in parts)
                outcomes += train_population(runs, resumes, reporters, progress)
                for job, outcome in zip(together, outcomes[-len(together) :]):
                    job.outcome = outcome
        except BaseException as error:  # a bug, or a signal while members started: no member trained further
            for job in jobs:
                job.outcome = job.outcome or error
            raise
        finally:
            for job in reversed(jobs):  # nested run_jobs end last first: each restores what it found
                job.go.set()
                job.join()
        stopped = next((o.signum for o in outcomes if isinstance(o, Interrupted)), None)
        return {int(j.config.hydra.job.num): j.job_return for j in jobs}, stopped

    def job_returns(self, outcomes: dict[int, tuple[JobStatus, Any]], sweep_dir: Path) -> dict[int, JobReturn]:
        """The Hydra job returns of the members' outcomes a worker sent back (train_shard), built here from the
        configs this process composed: a worker pickles a float or an error for each, not two whole configs."""
        returns = {}
        for config in self.configs:
            status, value = outcomes[int(config.hydra.job.num)]
            run_dir = sweep_dir / str(OmegaConf.select(config, "hydra.sweep.subdir"))
            returns[int(config.hydra.job.num)] = job_return(config, run_dir, value, status)
        return returns


def by_start(jobs: list[MemberJob]) -> list[list[MemberJob]]:
    """Members grouped by the step they continue from, earliest first: a population trains from one step."""
    groups: dict[int, list[MemberJob]] = {}
    for job in jobs:
        groups.setdefault(job.resume["state"]["step"] if job.resume else 0, []).append(job)
    return [groups[step] for step in sorted(groups)]


def train_shard(
    shard: Shard, hydra_context: HydraContext, config: DictConfig, singletons: dict[Any, Any], board: str
) -> tuple[dict[int, tuple[JobStatus, Any]], int | None]:
    """A shard in a worker process, with Hydra's state as the sweep's process has it; its progress on the board.
    Returns each member's job status and return value (Shard.job_returns makes them job returns again), and the
    signal that stopped them, if one did."""
    setup_globals()
    Singleton.set_state(singletons)
    path = Path(board) / f"{shard.number}.json"

    def progress(done: int, tally: Tally) -> None:
        post(path, {"pid": os.getpid(), "number": shard.number, "done": done, **asdict(tally)})

    post(path, {"pid": os.getpid(), "number": shard.number, "done": None})
    returns, stopped = shard.run(hydra_context, config, progress)
    return {number: (job.status, job._return_value) for number, job in returns.items()}, stopped


def post(path: Path, values: dict) -> None:
    """A shard's progress, written whole (a reader never sees half a file)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(values))
    temporary.replace(path)


def read_board(board: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(board).glob("*.json"))]


def show(bar, progress: list[dict]) -> None:
    """The shards' progress as one bar: the steps every shard has done, the members' tally summed."""
    started = [p for p in progress if p["done"] is not None]
    if not started:
        return
    tally = Tally(**{key: sum(p[key] for p in started) for key in ("running", "finished", "diverged", "stopped")})
    tally.best_dev = min(p["best_dev"] for p in started)
    bar.postfix = tally.line()
    bar.update(min(p["done"] for p in started) - bar.n)


def shown_on(bar):
    """The progress of a shard trained in this process, on the population's bar."""

    def progress(done: int, tally: Tally) -> None:
        bar.postfix = tally.line()
        bar.update(done - bar.n)

    return progress


class MemberJob(threading.Thread):
    """One member as a Hydra job: run_job writes its record and calls the callbacks, then its task prepares the run
    (makemore.train.start) and waits for the population to train it; its outcome becomes the job's return value."""

    def __init__(self, hydra_context: HydraContext, config: DictConfig, data: dict):
        super().__init__(daemon=True)
        self.hydra_context, self.config, self.data = hydra_context, config, data
        self.started, self.go = threading.Event(), threading.Event()
        self.prepared = self.resume = self.reporter = self.outcome = self.job_return = self.kept = None

    def run(self) -> None:
        self.job_return = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task,
            config=self.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def task(self, cfg: DictConfig) -> float:
        hydra = HydraConfig.get()
        run_dir, sweep_dir = Path(hydra.runtime.output_dir), Path(hydra.sweep.dir)
        error: BaseException | None = None
        try:
            self.kept, self.resume = sweep_member(cfg, run_dir, sweep_dir)  # kept: it ended before its worker died
            if self.kept is None:
                lock.hold(run_dir)  # let go as its job ends (with this process, if it dies)
                self.prepared = start(cfg, run_dir, self.resume, shared=self.data)
                self.reporter = reporter_for(cfg, hydra.sweeper, sweep_dir)
        except Exception as e:
            error = e
        finally:
            self.started.set()
        self.go.wait()  # ends only in turn: a run_job's end restores Hydra's global config
        if self.kept is not None:
            return self.kept
        try:
            return self.ended(run_dir, error or self.outcome)
        finally:
            lock.release(run_dir)

    def ended(self, run_dir: Path, outcome) -> float:
        """The member's result for its sweeper; a failure or a stop recorded, as a run alone's."""
        if isinstance(outcome, dict):
            return math.inf if outcome["dev_loss"] is None else outcome["dev_loss"]
        if self.prepared and not isinstance(outcome, MakemoreError):  # the population closed those it ended itself
            self.prepared.loggers.close()
        if isinstance(outcome, Exception):
            reason = record_end(outcome, run_dir)
            if not isinstance(outcome, Pruned):
                print(f"error: {reason}", file=sys.stderr)
        return math.inf  # failed, or stopped before it trained (nothing recorded: continuing the sweep runs it)


def stop_at_a_failure(unit: grouping.Population | grouping.Alone, sweep_dir: Path) -> None:
    """fail_fast: the first failed member of the unit ends the sweep with its error (FailedFast, one line)."""
    members = unit.members if isinstance(unit, grouping.Population) else [unit.member]
    for member in members:
        metrics = read_metrics(sweep_dir / member.name) or {}
        if metrics.get("status") == "failed":
            raise MakemoreError(
                f"{member.name} failed: {metrics.get('error')}; the sweep stopped there (hydra.launcher.fail_fast="
                f"true), keeping what finished: continue it with {continue_command(str(sweep_dir))}"
            )


def start_step(run_dir: Path) -> int:
    """The step a member continues from: its checkpoint's, or 0."""
    if not (run_dir / CHECKPOINT).is_file() or ended_metrics(run_dir):
        return 0
    return load_checkpoint(run_dir / CHECKPOINT, {"optimizer", "state"})["state"]["step"]


def lost_line(shard: Shard, worker: int | None, error: BaseException, then: str) -> str:
    """The one line a lost worker gets: which worker, how it died, its members, what happens to them."""
    names = ", ".join(str(OmegaConf.select(c, "hydra.sweep.subdir")) for c in shard.configs)
    who = f"worker {worker}" if worker else "a worker"
    return f"{who} was lost ({how_it_died(error)}); its members ({names}) {then}"


def job_return(config: DictConfig, run_dir: Path, value: Any, status: JobStatus = JobStatus.COMPLETED) -> JobReturn:
    """A member's job return, as Hydra's run_job makes one, from its composed config (as both its task's config
    and Hydra's, its output directory set: not copied, which costs ~15 ms a member): `value` its return value (inf
    for a member whose worker was lost for good, as a failed member's), or its error where `status` is FAILED."""
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.runtime.output_dir = str(run_dir)
    return JobReturn(
        overrides=list(config.hydra.overrides.task),
        cfg=config,
        hydra_cfg=config,
        working_dir=str(run_dir),
        task_name=str(config.hydra.job.name),
        status=status,
        _return_value=value,
    )


def imported_once(config: DictConfig) -> None:
    """What the workers and this process import anyway, imported here before the workers are forked, so that each
    has it at no cost: matplotlib (the members' pictures, the leaderboard), and TensorBoard's writer where the members
    and the sweep's summary log there."""
    import importlib

    importlib.import_module("makemore.plots")
    if writes_tensorboard(OmegaConf.to_container(config.logger, resolve=True)):
        importlib.import_module("torch.utils.tensorboard")


def trials(unit: grouping.Population) -> list[list[grouping.Member]]:
    """The population's members by the process they must share: an Optuna trial's seeds (its pruner judges their
    mean at each step, and stops them all at one step), else each member on its own."""
    groups: dict = {}
    for member in unit.members:
        trial = OmegaConf.select(member.config, "trial")
        groups.setdefault(member.index if trial is None else ("trial", trial), []).append(member)
    return list(groups.values())


def worker_start() -> str:
    """How this process would start its workers now: "forked" where a fork is safe, else "spawned"."""
    return "forked" if fork_is_safe() else "spawned"


def first_index(unit: grouping.Population | grouping.Alone) -> int:
    return unit.members[0].index if isinstance(unit, grouping.Population) else unit.member.index
