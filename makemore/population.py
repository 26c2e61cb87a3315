"""A population: sweep members of one shape trained together in the training loop (makemore.loop) on a stacked
engine (makemore.stacked), K members where a run alone is one.

Each member is a run like any other (makemore.train.Run): its own batches (its seed's), schedule, evaluations,
checkpoints, logs and outputs, and the numbers of its solo run. A member ends on its own, when it reaches its
steps, stops early, stops at the target, diverges or is pruned by Optuna: it is finished (or recorded) at once and
the others go on without it. A stop signal (Ctrl-C, SIGTERM, SIGUSR2) checkpoints every member still training;
continuing the sweep resumes them together. `probe` times a population's steps for the launcher's plan.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from makemore.loop import Loop, Progress
from makemore.rundir import POPULATION, write_json
from makemore.train import Run, conclude, member_of, start, train_run

PROBE_STEPS = (10, 110)  # a probe's two short runs: the 100 steps between them are what a step costs


def train_population(jobs: list[Run], resumes: list[dict | None], reporters: list, progress: Progress) -> list:
    """Train the members together from their common step; each one's outcome, in order: its metrics (it finished
    and wrote its outputs) or the exception that ended it (Diverged, Pruned, Interrupted: the caller records it)."""
    members = [
        member_of(job, resume, reporter, functools.partial(conclude, job))
        for job, resume, reporter in zip(jobs, resumes, reporters)
    ]
    data = jobs[0].data
    batch = data.rows_per_batch or jobs[0].cfg.batch_size
    outcomes = Loop(members, data.X, data.Y, data.dataset.vocab.size, batch, stacked=True).train(progress)
    for job, outcome in zip(jobs, outcomes):
        if isinstance(outcome, Exception):  # a finished member closed its loggers as it ended
            job.loggers.close()
    return outcomes


class PopulationBar(tqdm):
    monitor_interval = 0  # no monitor thread: the sweep's process forks its workers (makemore.workers.fork_is_safe)


def progress_bar(title: str, first: int, last: int, shown: bool) -> tqdm:
    """The population's one progress bar: steps, and how many members run, finished, diverged or stopped."""
    return PopulationBar(total=last, initial=first, disable=not shown, desc=title, unit="step", dynamic_ncols=True)


def write_population_record(run_dir: Path, population: dict) -> None:
    """The member's record of its population (.hydra/population.json), written when it first trains in one: a
    continued member keeps the record of the population it started in."""
    path = run_dir / POPULATION
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, population)


def probe(configs: list[DictConfig]) -> tuple[float, float]:
    """What training `configs` together costs on this machine: (seconds per step, seconds for the rest: data,
    model, the final evaluation and outputs), from two short runs in a throwaway directory (nothing logged)."""
    seconds = []
    quiet = logging.getLogger("makemore").level
    logging.getLogger("makemore").setLevel(logging.WARNING)  # the probe's runs say nothing
    try:
        for steps in PROBE_STEPS:
            with (
                tempfile.TemporaryDirectory(prefix="makemore-probe-") as tmp,
                contextlib.redirect_stdout(io.StringIO()),
            ):
                short = [probe_config(config, steps) for config in configs]
                began = time.perf_counter()
                if len(short) == 1:
                    train_run(short[0], Path(tmp))
                else:
                    shared: dict = {}
                    jobs = [start(config, Path(tmp) / str(k), shared=shared) for k, config in enumerate(short)]
                    train_population(jobs, [None] * len(jobs), [None] * len(jobs), lambda done, tally: None)
                seconds.append(time.perf_counter() - began)
    finally:
        logging.getLogger("makemore").setLevel(quiet)
    (short, long), (first, second) = PROBE_STEPS, seconds
    per_step = max(0.0, (second - first) / (long - short))
    return per_step, max(0.0, first - short * per_step)


def probe_config(config: DictConfig, steps: int) -> DictConfig:
    """A member's config cut to `steps`, evaluated once at its end, with nothing logged or checkpointed."""
    short = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    with open_dict(short):
        short.steps, short.eval_interval, short.checkpoint_interval = steps, steps, 0
        short.progress, short.samples, short.logger = False, 0, {}
        short.stop_at_target, short.early_stopping, short.trial = False, 0, None  # no stop, nothing reported
    return short
