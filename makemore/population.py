"""A population: sweep members of one shape trained together in the training loop (makemore.loop) on a stacked
engine (makemore.stacked), K members where a run alone is one.

Each member is a run like any other (makemore.train.Run): its own batches (its seed's), schedule, evaluations,
checkpoints, logs and outputs, and the numbers of its solo run. A member ends on its own, when it reaches its
steps, stops early, stops at the target, diverges or is pruned by Optuna: it is finished (or recorded) at once and
the others go on without it. A stop signal (Ctrl-C, SIGTERM, SIGUSR2) checkpoints every member still training;
continuing the sweep resumes them together.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tqdm import tqdm

from makemore.loop import Loop, Progress
from makemore.rundir import POPULATION, write_json
from makemore.train import Run, conclude, member_of


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


def progress_bar(title: str, first: int, last: int, shown: bool) -> tqdm:
    """The population's one progress bar: steps, and how many members run, finished, diverged or stopped."""
    return tqdm(total=last, initial=first, disable=not shown, desc=title, unit="step", dynamic_ncols=True)


def write_population_record(run_dir: Path, population: dict) -> None:
    """The member's record of its population (.hydra/population.json), written when it first trains in one: a
    continued member keeps the record of the population it started in."""
    path = run_dir / POPULATION
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, population)
