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

import copy
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.makemore_population.config import PopulationLauncherConf  # noqa: F401  (registers the settings)
from makemore import grouping
from makemore.checkpoint import load_checkpoint
from makemore.cli import record_end
from makemore.errors import MakemoreError, SweepInterrupted
from makemore.hydra_versions import configure_console_log, job_id
from makemore.loop import STOP_SIGNALS, Interrupted, Tally
from makemore.population import progress_bar, train_population, write_population_record
from makemore.rundir import CHECKPOINT, ended_metrics
from makemore.search import Pruned
from makemore.train import reporter_for, start, sweep_member

# Member-steps a population needs before it is split among worker processes, which cost ~2 s to start (each imports
# torch): 20,000 steps of the default MLP take ~8 s of one core; below, the population trains in the sweep's process.
WORKER_STEPS = 20_000


class PopulationLauncher(Launcher):
    """`hydra.launcher`: max_members, workers (hydra_plugins/makemore_population/config.py)."""

    def __init__(self, max_members: int = 16, workers: int | None = None) -> None:
        self.max_members, self.workers = max_members, workers
        self.cores = len(os.sched_getaffinity(0))
        self.basic = BasicLauncher()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        loader = hydra_context.config_loader
        compose = loader.load_sweep_config

        def load_sweep_config(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
            # The sweeper composes each member once to validate its batch; the launcher takes that config (a copy
            # costs ~1/20 of composing it again: 16 members of lecture 2's MLP start ~3 s sooner here).
            if master_config is self.config and tuple(sweep_overrides) in self.composed:
                return self.composed.pop(tuple(sweep_overrides))
            composed = compose(master_config, sweep_overrides)
            if master_config is self.config:
                self.composed[tuple(sweep_overrides)] = copy.deepcopy(composed)
            return composed

        loader.load_sweep_config = load_sweep_config

    def processes(self, unit: grouping.Population) -> int:
        """Worker processes for a population: `workers`, or by default one per core on a CPU when its work pays for
        starting them (WORKER_STEPS), else its own process (and one drives a GPU)."""
        if self.workers:
            return min(self.workers, len(unit.members))
        config = unit.members[0].config
        steps = sum(OmegaConf.select(m.config, "steps") - m.start for m in unit.members)
        cpu = OmegaConf.select(config, "device") == "cpu"
        return min(self.cores, len(unit.members)) if cpu and steps >= WORKER_STEPS else 1

    def executor(self):
        """joblib's reusable loky executor, as hydra/launcher=joblib uses it: its workers stay for the next launch."""
        from joblib.externals.loky import get_reusable_executor

        return get_reusable_executor(max_workers=self.workers or self.cores)

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
        units = grouping.plan(members, self.max_members) + [grouping.Alone(m, "it ended earlier") for m in kept]
        units.sort(key=first_index)
        for line in grouping.lines([u for u in units if not (isinstance(u, grouping.Alone) and u.member in kept)]):
            print(line, flush=True)
        returns: dict[int, JobReturn] = {}
        populations = [u for u in units if isinstance(u, grouping.Population)]
        for unit in units:
            if isinstance(unit, grouping.Alone):
                overrides = job_overrides[unit.member.index - initial_job_idx]
                returns[unit.member.index] = self.basic.launch([overrides], unit.member.index)[0]
            else:
                title = f"population {populations.index(unit) + 1} of {len(populations)}"
                returns.update(self.train(unit, sweep_dir, title))
        return [returns[number] for number in range(initial_job_idx, initial_job_idx + len(job_overrides))]

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
            Shard(number, [m.config for m in unit.members[number::count]], population, threads)
            for number in range(count)  # members dealt round-robin: each shard's share of every kind of member
        ]
        last = max(OmegaConf.select(m.config, "steps") for m in unit.members)
        first = min(m.start for m in unit.members)
        shown = any(OmegaConf.select(m.config, "progress") for m in unit.members)
        with progress_bar(title, first, last, shown) as bar:
            if count == 1:
                returns, stopped = shards[0].run(self.hydra_context, self.config, shown_on(bar))
            else:
                returns, stopped = self.in_workers(shards, bar)
        if stopped:
            raise SweepInterrupted(sweep_dir, stopped)
        return returns

    def in_workers(self, shards: list[Shard], bar) -> tuple[dict[int, JobReturn], int | None]:
        """The shards in worker processes (joblib's reusable loky executor, as hydra/launcher=joblib's), one bar for
        them all; a stop signal this process gets goes on to the workers, which checkpoint their members."""
        executor = self.executor()
        state = Singleton.get_state()
        with tempfile.TemporaryDirectory(prefix="makemore-population-") as board:
            futures = [
                executor.submit(train_shard, shard, self.hydra_context, self.config, state, board) for shard in shards
            ]
            arrived: list[int] = []
            previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in STOP_SIGNALS}
            told: dict[int, int] = {}  # the signals each worker was sent so far
            try:
                while not all(f.done() for f in futures):
                    progress = read_board(board)
                    for pid in (p["pid"] for p in progress):  # `kill` and a scheduler signal this process only
                        for signum in arrived[told.get(pid, 0) :]:
                            os.kill(pid, signum)
                        told[pid] = len(arrived)
                    show(bar, progress)
                    time.sleep(0.2)
                show(bar, read_board(board))
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
            try:
                results = [f.result() for f in futures]
            except Exception:
                if arrived:  # a worker the signal stopped before its members trained: nothing of theirs to keep
                    return {}, arrived[0]
                raise
        returns = {index: ret for shard_returns, _ in results for index, ret in shard_returns.items()}
        stopped = next((signum for _, signum in results if signum), arrived[0] if arrived else None)
        return returns, stopped


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
            if ready:
                parts = ("prepared", "resume", "reporter")
                runs, resumes, reporters = ([getattr(j, part) for j in ready] for part in parts)
                outcomes = train_population(runs, resumes, reporters, progress)
            for job, outcome in zip(ready, outcomes):
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


def train_shard(
    shard: Shard, hydra_context: HydraContext, config: DictConfig, singletons: dict[Any, Any], board: str
) -> tuple[dict[int, JobReturn], int | None]:
    """A shard in a worker process, with Hydra's state as the sweep's process has it; its progress on the board."""
    setup_globals()
    Singleton.set_state(singletons)
    path = Path(board) / f"{shard.number}.json"

    def progress(done: int, tally: Tally) -> None:
        post(path, {"pid": os.getpid(), "done": done, **asdict(tally)})

    post(path, {"pid": os.getpid(), "done": None})
    return shard.run(hydra_context, config, progress)


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
        self.prepared = self.resume = self.reporter = self.outcome = self.job_return = None

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
            _, self.resume = sweep_member(cfg, run_dir, sweep_dir)  # a member that ended earlier never gets here
            self.prepared = start(cfg, run_dir, self.resume, shared=self.data)
            self.reporter = reporter_for(cfg, hydra.sweeper, sweep_dir)
        except Exception as e:
            error = e
        finally:
            self.started.set()
        self.go.wait()  # ends only in turn: a run_job's end restores Hydra's global config
        outcome = error or self.outcome
        if isinstance(outcome, dict):
            return math.inf if outcome["dev_loss"] is None else outcome["dev_loss"]
        if self.prepared and not isinstance(outcome, MakemoreError):  # the population closed those it ended itself
            self.prepared.loggers.close()
        if isinstance(outcome, Exception):
            reason = record_end(outcome, run_dir)
            if not isinstance(outcome, Pruned):
                print(f"error: {reason}", file=sys.stderr)
        return math.inf  # failed, or stopped before it trained (nothing recorded: continuing the sweep runs it)


def start_step(run_dir: Path) -> int:
    """The step a member continues from: its checkpoint's, or 0."""
    if not (run_dir / CHECKPOINT).is_file() or ended_metrics(run_dir):
        return 0
    return load_checkpoint(run_dir / CHECKPOINT, {"optimizer", "state"})["state"]["step"]


def first_index(unit: grouping.Population | grouping.Alone) -> int:
    return unit.members[0].index if isinstance(unit, grouping.Population) else unit.member.index
