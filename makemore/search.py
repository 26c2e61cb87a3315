"""Optuna studies for `hydra/sweeper=optuna`: where a study lives, and the sweep member's side of its trial.

The sweeper (hydra_plugins/makemore_optuna) asks Optuna for trials and launches one job per trial with the
override `trial=<number>`; the job finds the same study through the same sweeper config (HydraConfig), reports
its dev loss at every evaluation and stops when the study's pruner says so. Optuna samples, stores and prunes.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig

from makemore.errors import MakemoreError
from makemore.redact import redact, shell_url
from makemore.shell import shell_word

CONNECT_SECONDS = 10  # how long a study's database server has to answer a connection
JOURNAL = "optuna_journal.log"  # the default storage: Optuna's journal file in the sweep directory
SWEEPER = "hydra_plugins.makemore_optuna.optuna_sweeper.OptunaSweeper"
OBJECTIVES = ("dev_loss", "params", "train_seconds", "seconds_to_target")  # hydra.sweeper.objectives, minimised
TO_TARGET = "seconds_to_target"  # the mission's question: how fast a config reaches the target
OPTIMIZATION_RESULTS = "optimization_results.yaml"  # the sweep's outcome: the best trial, or the Pareto front
PARETO_FRONT = "pareto_front"  # its key for the non-dominated trials of a multi-objective study
RESULT_OBJECTIVES = "objectives"  # with a front: the objectives, in the order of each trial's values
TRIAL_VALUES = "trial_values"  # with a front: every finished trial's values, by trial number
IMPORTANCES = "param_importances"  # its key for each parameter's importance (Optuna's PED-ANOVA)
IMPORTANCE_TRIALS = 5  # finished trials before importances say more than noise
# Trial attributes of a seed group (seeds=N): its seeds, each one's final dev loss, and their standard deviation.
SEEDS, SEED_VALUES, SEED_STD = "seeds", "seed_dev_losses", "seed_dev_std"
# The trial attribute a pruned run sets: the sweeper tells Optuna PRUNED, and the trial's other seeds stop.
PRUNED_AT = "pruned_at_step"


class Pareto(NamedTuple):
    """A multi-objective search's finished trials on two of its objectives, and which of them are on its front."""

    x: str  # the objective along the x axis (a cost: params, train_seconds, seconds_to_target)
    y: str  # along the y axis: dev_loss where it is an objective
    points: dict[str, tuple[float, float]]  # (x, y) by trial name, `t<number>`
    front: set[str]  # the names of the trials no other trial beats on every objective


class Pruned(MakemoreError):
    """The study's pruner stopped this trial at an evaluation."""

    def __init__(self, trial: int, step: int, dev_loss: float, train_seconds: float, judged: str = "dev"):
        super().__init__(f"pruned at step {step} ({judged} {dev_loss:.4f})")
        self.trial, self.step, self.dev_loss = trial, step, dev_loss  # the dev loss judged (the average's, with EMA)
        self.train_seconds = train_seconds  # what the trial cost before it stopped


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The study's storage as one string: a database URL as given, or an absolute journal file path
    (default: the sweep directory's journal, which works on a shared file system with no server)."""
    if storage and "://" in storage:
        return storage
    return str((Path(storage) if storage else sweep_dir / JOURNAL).expanduser().resolve())


def open_storage(url: str):
    """Optuna's storage behind `storage_url`: RDB for a URL, else a journal file (its lock works across hosts)."""
    import optuna

    if "://" in url:
        from sqlalchemy.exc import DBAPIError

        try:
            return database_storage(url)
        except ImportError as e:  # the URL's database driver (SQLAlchemy's psycopg for postgresql://)
            raise MakemoreError(
                f"the study's storage {redact(url)} needs a database driver that is not installed "
                f"({e.__cause__ or e}); pip install -e '.[postgres]' for PostgreSQL, or leave hydra.sweeper.storage "
                "unset for the journal file"
            ) from None
        except DBAPIError as e:
            raise StorageAway(url, e) from None
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(url))


def database_storage(url: str, attempts: int = 5):
    """Optuna's RDB storage; workers started together on an empty database race to create its tables, and the
    losers find them made after a moment."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    # A server that does not answer is given up in CONNECT_SECONDS (libpq's connect_timeout), not TCP's minutes.
    engine = {"connect_args": {"connect_timeout": CONNECT_SECONDS}} if url.startswith("postgres") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except (IntegrityError, ProgrammingError):  # another worker created the schema in the same instant
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


class StorageAway(MakemoreError):
    """The study's database refused or did not answer: one line, with its URL's password hidden."""

    def __init__(self, url: str, error: Exception):
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        super().__init__(
            f"the study's storage {redact(url)} does not answer ({redact(cause)}); start its database server and "
            "run this command again (finished trials are kept), or leave hydra.sweeper.storage unset to keep a new "
            "study in the sweep directory's journal file"
        )


def dashboard_lines(url: str) -> list[str]:
    """What opens the study in optuna-dashboard (a journal file or a database URL), as commands to paste; first the
    install where it is missing (an optional extra)."""
    if shutil.which("optuna-dashboard"):
        return [f"optuna-dashboard {shell_url(url)}"]
    beside = Path(sys.executable).parent / "optuna-dashboard"  # installed in this venv, which is not on PATH
    if beside.is_file():
        return [f"{shell_word(str(beside))} {shell_url(url)}"]
    return ["pip install 'optuna-dashboard>=0.15'", f"optuna-dashboard {shell_url(url)}"]


def study_name(sweeper: DictConfig, sweep_dir: Path) -> str:
    """The configured study name, or the sweep directory's name."""
    return sweeper.get("study_name") or sweep_dir.name


def trial_reporter(
    trial_number: int | None, sweeper: DictConfig | None, sweep_dir: Path | None, seed: int, judged: str = "dev"
) -> Callable[[int, float, float], None] | None:
    """For a member of an Optuna sweep (`sweeper`: the sweep's hydra.sweeper config): a function that reports
    (step, dev loss, training seconds) to its trial and raises Pruned when the study's pruner stops it. In a seed
    group (seeds=N) the trial's value at a step is the mean of its seeds' dev losses there, of the seeds that
    reached it so far. `judged`: what the dev loss is of, for the pruned run's status. None for any other run (a
    rerun or resume of a member included)."""
    if trial_number is None or sweeper is None or sweep_dir is None or sweeper.get("_target_") != SWEEPER:
        return None
    import optuna

    from makemore.hydra_versions import instantiate

    storage = open_storage(storage_url(sweeper.storage, sweep_dir))
    name = study_name(sweeper, sweep_dir)
    study = optuna.load_study(study_name=name, storage=storage, pruner=instantiate(sweeper.pruner))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), trial_number)
    if len(study.directions) > 1:  # Optuna prunes single-objective studies only: nothing to report to
        return None
    trial = optuna.trial.Trial(study, trial_id)
    seeds = storage.get_trial(trial_id).user_attrs.get(SEEDS)

    def group_mean(step: int, dev_loss: float) -> None:
        """This seed's dev loss kept beside its siblings'; the trial's value at `step` their mean."""
        storage.set_trial_user_attr(trial_id, f"dev_loss {step} seed={seed}", dev_loss)
        kept = storage.get_trial(trial_id).user_attrs
        values = [kept[key] for s in seeds if (key := f"dev_loss {step} seed={s}") in kept]
        storage.set_trial_intermediate_value(trial_id, step, statistics.fmean(values))

    def report(step: int, dev_loss: float, train_seconds: float) -> None:
        if seeds:
            if storage.get_trial(trial_id).user_attrs.get(PRUNED_AT) is not None:  # a sibling's report pruned it
                raise Pruned(trial_number, step, dev_loss, train_seconds, judged)  # every seed of the trial stops
            group_mean(step, dev_loss)
            prune = study.pruner.prune(study, storage.get_trial(trial_id))
        else:
            trial.report(dev_loss, step)
            prune = trial.should_prune()
        if prune:
            trial.set_user_attr(PRUNED_AT, step)
            raise Pruned(trial_number, step, dev_loss, train_seconds, judged)

    return report
