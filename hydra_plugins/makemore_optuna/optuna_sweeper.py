"""A Hydra sweeper on Optuna's ask-and-tell API: Hydra's sweep syntax in, one job per trial (and seed) out.

Optuna samples, stores and prunes; this maps overrides to distributions and trial parameters back to overrides.
Each job gets `trial=<number>` and reports to its trial itself (makemore.search), so pruning works in any
launcher's process. A swept `seed` (`seeds=N`) is not searched: each trial runs once per seed, its value the
mean dev loss of its seeds (their spread a trial attribute), so no trial wins by a lucky seed. Trials are counted
in the study, so a second process or a rerun of the same command (same hydra.sweep.dir) continues the study:
finished trials are kept, interrupted ones are tried again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import statistics
import threading
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.makemore_optuna.config import Direction  # importing it registers the settings' schema
from makemore.errors import MakemoreError
from makemore.rundir import SWEEP_RECORD, read_metrics
from makemore.search import (
    IMPORTANCE_TRIALS,
    IMPORTANCES,
    OBJECTIVES,
    OPTIMIZATION_RESULTS,
    PARETO_FRONT,
    PRUNED_AT,
    RESULT_OBJECTIVES,
    SEED_STD,
    SEED_VALUES,
    SEEDS,
    TO_TARGET,
    TRIAL_VALUES,
    StorageAway,
    dashboard_lines,
    open_storage,
    storage_url,
    study_name,
)
from makemore.settings import Settings
from makemore.workers import alive

log = logging.getLogger(__name__)
OWNER = "owner"  # trial user attribute: host and pid of the sweep process that launched it


def distribution(parsed: Override):
    """The Optuna distribution of one sweep override: choice, range, interval, tag(log, interval), and
    tag(int, interval) / tag(int, log, interval) for integers."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = parsed.value()
    if parsed.is_choice_sweep() or (parsed.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(parsed.sweep_string_iterator()))
    if parsed.is_range_sweep():  # Hydra's range excludes stop, like Python's
        values = list(parsed.sweep_iterator())
        kind = IntDistribution if all(isinstance(v, int) for v in values) else FloatDistribution
        return kind(values[0], values[-1], step=value.step)
    if parsed.is_interval_sweep():  # Hydra reads an interval's bounds as floats; tag(int, ...) asks for integers
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise MakemoreError(f"the Optuna sweeper cannot search {parsed.input_line}; use choice, range or interval")


class OptunaSweeper(Sweeper):
    """`hydra.sweeper`: direction, study_name, storage, n_trials, n_jobs, sampler, pruner, params."""

    def __init__(
        self,
        direction: Direction | str,
        objectives: list[str],
        target_penalty: float,
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        confirm: int,
        confirm_seeds: int,
        sampler: Any,
        pruner: Any,
        pruning_ema_decay: float | None,
        params: dict | None = None,
    ):
        self.direction = direction.name if isinstance(direction, Direction) else str(direction)
        self.objectives, self.target_penalty = list(objectives), float(target_penalty)
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.confirm, self.confirm_seeds = confirm, confirm_seeds
        self.sampler, self.pruner = built(sampler), built(pruner)
        self.pruning_ema_decay = pruning_ema_decay
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list:
        from sqlalchemy.exc import DBAPIError

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        seeds = replicate_seeds(parsed)
        parsed = [p for p in parsed if p.get_key_element() != "seed" or not seeds]
        space = {p.get_key_element(): distribution(p) for p in parsed if p.is_sweep_override()}
        fixed = [f"{p.get_key_element()}={p.get_value_element_as_str()}" for p in parsed if not p.is_sweep_override()]
        directions = check_objectives(self.objectives, self.direction, self.pruner, self.confirm)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        name, url = study_name(self.config.hydra.sweeper, sweep_dir), storage_url(self.storage, sweep_dir)
        database = open_storage(url) if "://" in url else None  # one that does not answer: refused before a byte
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not (sweep_dir / SWEEP_RECORD).exists():
            OmegaConf.save(self.config, sweep_dir / SWEEP_RECORD)
        if self.confirm and not seeds and not sets(fixed, "seed"):
            fixed.append(f"seed={Settings.seed}")  # named beside the confirming seeds in the seed groups
        if TO_TARGET in self.objectives and not sets(fixed, "stop_at_target"):
            fixed.append("stop_at_target=true")  # a trial's time to the target ends where it reaches it
        if self.judges_average(fixed, space):
            fixed.append(f"ema_decay={self.pruning_ema_decay}")
        try:
            return self.search(name, database or open_storage(url), space, fixed, seeds, directions, sweep_dir)
        except DBAPIError as e:  # the database went away during the search
            raise StorageAway(url, e) from None

    def search(self, name: str, storage, space: dict, fixed: list[str], seeds, directions: dict, sweep_dir: Path):
        """The study's trials, asked for, launched and told, until it holds n_trials (and the confirmations)."""
        import optuna

        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            **directions,
            load_if_exists=True,
        )
        if study.trials:  # a continued search: a sampler seeded as at the start would draw its opening trials again
            study.sampler = continued_sampler(self.config.hydra.sweeper.sampler, len(study.trials))
        retry_abandoned(study)
        search = Search(study, space, fixed, seeds, f"{socket.gethostname()}:{os.getpid()}", sweep_dir)
        returns = self.in_slots(search) if self.refills() else self.in_batches(search)
        if self.confirm:
            returns.append(self.confirm_best(search))
        write_results(study, sweep_dir, self.objectives)
        written = OmegaConf.to_container(self.config.hydra.sweeper, resolve=False).get("storage")
        print("the study in optuna-dashboard:", *dashboard_lines(storage_url(written, sweep_dir)), sep="\n    ")
        return returns

    def judges_average(self, fixed: list[str], space: dict) -> bool:
        """Whether trials get ema_decay=pruning_ema_decay: a pruner judges them, and neither the sweep's overrides
        nor its composed config set ema_decay (any launcher: a population stacks its members' averages too)."""
        chosen = "ema_decay" in space or sets(fixed, "ema_decay") or self.config.ema_decay
        return prunes(self.pruner) and self.pruning_ema_decay is not None and not chosen

    def refills(self) -> bool:
        """Whether n_jobs trials run in slots that refill as each ends: with a launcher whose every launch runs in
        processes of its own (joblib). In-process launchers run one batch at a time, and the population launcher
        stacks a batch's members into one model."""
        return self.n_jobs > 1 and type(self.launcher).__name__ == "JoblibLauncher"

    def in_batches(self, search: Search) -> list:
        """n_jobs trials at a time, each batch launched together and awaited whole."""
        import optuna

        returns, failed_in_a_row = [], 0
        while (left := self.n_trials - counted(search.study)) > 0:
            search.check_failures(failed_in_a_row, self.n_trials)
            trials = search.ask(min(self.n_jobs, left), self.n_trials)
            if not trials:
                break
            try:
                returns.append(self.launch(search.study, trials, search.fixed, search.seeds))
            except KeyboardInterrupt:  # train.py prints the command that continues the search
                search.requeue(trials)
                raise
            states = [search.study.get_trials(deepcopy=False)[t.number].state for t in trials]
            failed = all(state == optuna.trial.TrialState.FAIL for state in states)
            failed_in_a_row = failed_in_a_row + len(trials) if failed else 0
        return returns

    def in_slots(self, search: Search) -> list:
        """n_jobs slots, each asking the study for its next trial as soon as its last one ends or is pruned, so a
        pruned trial's core never waits for the slowest trial of a batch. Each trial's jobs are one launch."""
        import optuna

        lock, returns, running, failed_in_a_row = threading.Lock(), [], [], [0]
        errors: list[BaseException] = []

        def slot() -> None:
            try:
                while True:
                    with lock:
                        if errors or self.n_trials - counted(search.study) <= 0:
                            return
                        search.check_failures(failed_in_a_row[0], self.n_trials)
                        trials = search.ask(1, self.n_trials)
                        if not trials:
                            return
                        running.append(trials[0])
                    returns.append(self.launch(search.study, trials, search.fixed, search.seeds))
                    with lock:
                        running.remove(trials[0])
                        failed = search.study.get_trials(deepcopy=False)[trials[0].number].state
                        failed_in_a_row[0] = failed_in_a_row[0] + 1 if failed == optuna.trial.TrialState.FAIL else 0
            except BaseException as error:  # raised again in the sweep's own thread
                errors.append(error)

        threads = [threading.Thread(target=slot, daemon=True) for _ in range(self.n_jobs)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)  # a short wait: Ctrl-C reaches this thread between waits
        except KeyboardInterrupt:
            with lock:
                search.requeue(list(running))
            raise
        if errors:
            raise errors[0]
        return returns

    def confirm_best(self, search: Search) -> list:
        """The best `confirm` trials again, each on `confirm_seeds` seeds past the search's own: runs outside the
        study (its trials keep their values), grouped with their trial's runs by the leaderboard's seed groups."""
        import optuna

        finished = search.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        best = sorted(finished, key=lambda t: t.value)[: self.confirm]
        given = [o.partition("=")[2] for o in search.fixed if o.startswith("seed=")]
        used = [int(s) for s in search.seeds or given or [Settings.seed]]
        extra = range(max(used) + 1, max(used) + 1 + self.confirm_seeds)
        fixed = [o for o in search.fixed if not o.startswith("seed=")]
        batch = [[*fixed, *(f"{k}={v}" for k, v in t.params.items()), f"seed={s}"] for t in best for s in extra]
        log.info("confirming the best %d trials on seeds %s", len(best), ", ".join(map(str, extra)))
        self.validate_batch_is_legal(batch)
        return self.launcher.launch(batch, initial_job_idx=len(search.study.trials) * max(1, len(search.seeds)))

    def launch(self, study, trials: list, fixed: list[str], seeds: list[str]) -> list:
        """Run the trials' jobs (one per seed, with seeds), each numbered after its trial; tell Optuna how each
        trial ended."""
        import optuna

        runs = len(seeds) or 1
        batch = [
            [
                *fixed,
                *(f"{k}={v}" for k, v in trial.params.items()),
                *([f"seed={s}"] if s else []),
                f"trial={trial.number}",
            ]
            for trial in trials
            for s in seeds or [None]
        ]
        self.validate_batch_is_legal(batch)
        results = []
        for first in range(len(trials)):  # consecutive trial numbers go in one launch (another process may interleave)
            if first and trials[first].number == trials[first - 1].number + 1:
                continue
            last = first
            while last + 1 < len(trials) and trials[last + 1].number == trials[last].number + 1:
                last += 1
            jobs = batch[first * runs : (last + 1) * runs]
            results += self.launcher.launch(jobs, initial_job_idx=trials[first].number * runs)
        for k, trial in enumerate(trials):
            ended = study.get_trials(deepcopy=False)[trial.number]
            ran = results[k * runs : (k + 1) * runs]
            values = [r.return_value if r.status == JobStatus.COMPLETED else None for r in ran]
            if PRUNED_AT in ended.user_attrs:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif all(isinstance(v, float) and math.isfinite(v) for v in values):
                if seeds:
                    trial.set_user_attr(SEED_VALUES, values)
                    trial.set_user_attr(SEED_STD, statistics.stdev(values) if runs > 1 else 0.0)
                scores = [self.scores(r) for r in ran]  # each objective, averaged over the seeds
                means = [statistics.fmean(column) for column in zip(*scores)]
                study.tell(trial, means if len(means) > 1 else means[0])
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return results

    def scores(self, result) -> list[float]:
        """A finished job's objectives, from its metrics.json (dev_loss is also the job's return value)."""
        metrics = read_metrics(Path(result.hydra_cfg.hydra.runtime.output_dir)) or {}
        scores = []
        for objective in self.objectives:
            if objective == TO_TARGET and metrics.get(TO_TARGET) is None:  # never reached: the whole run and more
                scores.append(metrics["train_seconds"] + self.target_penalty)
            else:
                scores.append(float(result.return_value if objective == "dev_loss" else metrics[objective]))
        return scores


def sets(fixed: list[str], key: str) -> bool:
    """Whether the sweep's fixed overrides give `key` a value."""
    return any(o.startswith(f"{key}=") for o in fixed)


def prunes(pruner) -> bool:
    """Whether an Optuna pruner may stop trials (every one but NopPruner)."""
    return pruner is not None and type(pruner).__name__ != "NopPruner"


def check_objectives(objectives: list[str], direction: str, pruner, confirm: int) -> dict:
    """create_study's direction(s): a single objective's as configured, every one of several minimised (each is a
    loss or a cost); refused in one line, before the sweep writes anything, where unknown, or where a pruner or
    confirm= is asked of several (Optuna prunes one objective; confirm ranks one)."""
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise MakemoreError(
            f"hydra.sweeper.objectives={objectives} is not allowed: each must be one of {', '.join(OBJECTIVES)}"
        )
    if len(objectives) == 1:
        return {"direction": direction}
    if confirm:
        raise MakemoreError("hydra.sweeper.confirm ranks one objective; a multi-objective search ends with its front")
    if prunes(pruner):
        raise MakemoreError(
            "a pruner cannot judge several objectives at once (Optuna prunes single-objective studies only); "
            "use hydra/sweeper/pruner=none with hydra.sweeper.objectives"
        )
    return {"directions": ["minimize"] * len(objectives)}


class Search:
    """One sweep process's side of a study: its search space, the fixed overrides, the seeds each trial runs,
    and the owner mark its trials carry."""

    def __init__(self, study, space: dict, fixed: list[str], seeds: list[str], owner: str, sweep_dir: Path):
        self.study, self.space, self.fixed, self.seeds = study, space, fixed, seeds
        self.owner, self.sweep_dir = owner, sweep_dir

    def ask(self, count: int, n_trials: int) -> list:
        """Up to `count` new trials, marked with this process and their seeds; none past n_trials."""
        trials = [self.study.ask(self.space) for _ in range(count)]
        trials = [trial for trial in trials if not surplus(self.study, trial, n_trials)]
        for trial in trials:
            trial.set_user_attr(OWNER, self.owner)
            if self.seeds:
                trial.set_user_attr(SEEDS, self.seeds)
        return trials

    def requeue(self, trials: list) -> None:
        """Interrupted trials: failed, and queued again first with the same parameters for the continued search."""
        import optuna

        for trial in trials:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.study.enqueue_trial(trial.params)

    def check_failures(self, failed_in_a_row: int, n_trials: int) -> None:
        """A search whose every trial fails would ask forever: it stops once n_trials fail in a row."""
        if failed_in_a_row >= n_trials:
            raise MakemoreError(
                f"the last {failed_in_a_row} trials all failed, so the search stopped; "
                f"see why in a member's train.log under {self.sweep_dir}"
            )


def replicate_seeds(parsed: list[Override]) -> list[str]:
    """The values of a swept `seed` (seeds=N sweeps seed=42,43,...): each trial's replicates, not a parameter."""
    swept = [p for p in parsed if p.get_key_element() == "seed" and p.is_sweep_override()]
    if swept and swept[-1].is_interval_sweep():
        raise MakemoreError(
            "the Optuna sweeper runs each trial once per seed: sweep seed as a list or a range, or use seeds=N"
        )
    return list(swept[-1].sweep_string_iterator()) if swept else []


def built(part: Any) -> Any:
    """The sampler or pruner: Hydra 1.3 builds them with the sweeper, 1.4 passes their configs as they are."""
    from makemore.hydra_versions import instantiate

    return instantiate(part) if OmegaConf.is_config(part) or isinstance(part, dict) else part


def continued_sampler(sampler: DictConfig, trials: int):
    """The configured sampler for a study that already holds `trials` trials: its seed moved on by that many, so the
    continued search draws new parameters, and the same ones again each time it continues from the same state."""
    from makemore.hydra_versions import instantiate

    seed = sampler.get("seed")
    return instantiate(sampler, **({"seed": seed + trials} if seed is not None else {}))


def write_results(study, sweep_dir: Path, objectives: list[str]) -> None:
    """optimization_results.yaml: how the trials ended, and the best trial's parameters and value (with enough
    trials, each parameter's importance), or a multi-objective study's Pareto front with every finished trial's
    values (the leaderboard's figure draws them)."""

    trials = study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in trials]
    results = {"name": study.study_name, "trials": {s: states.count(s) for s in sorted(set(states))}}
    if "complete" in states and len(study.directions) > 1:
        front = sorted(study.best_trials, key=lambda t: t.values)
        results[RESULT_OBJECTIVES] = list(objectives)
        results[PARETO_FRONT] = [t.number for t in front]
        results[TRIAL_VALUES] = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
        log.info("Pareto front of %d trials: %s", len(front), ", ".join(f"{t.number} {t.values}" for t in front))
    elif "complete" in states:
        best = study.best_trial
        results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
        log.info("best trial %d: %s = %.4f", best.number, best.params, best.value)
        if states.count("complete") >= IMPORTANCE_TRIALS and len(best.params) > 1:
            results[IMPORTANCES] = {k: round(v, 4) for k, v in param_importances(study).items()}
    OmegaConf.save(OmegaConf.create(results), sweep_dir / OPTIMIZATION_RESULTS)


def surplus(study, trial, n_trials: int) -> bool:
    """Whether another process filled n_trials first (both counted before either asked): the later trial is failed,
    unrun, so the study ends with n_trials finished trials however many processes share it."""
    import optuna

    if len([t for t in counted_trials(study) if t.number < trial.number]) < n_trials:
        return False
    trial.set_user_attr("surplus", "another sweep process reached n_trials first")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return True


def param_importances(study) -> dict[str, float]:
    """Each parameter's importance to the objective: Optuna's default evaluator, PED-ANOVA (deterministic, and
    without fANOVA's scikit-learn)."""
    import optuna

    return optuna.importance.get_param_importances(study)


def counted_trials(study) -> list:
    """Trials that count toward n_trials: finished (complete or pruned) and running ones."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    return study.get_trials(deepcopy=False, states=states)


def counted(study) -> int:
    return len(counted_trials(study))


def retry_abandoned(study) -> None:
    """Trials left running by a sweep process of this host that no longer exists: failed, and queued again."""
    import optuna

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner_host, _, pid = str(trial.user_attrs.get(OWNER, "")).rpartition(":")
        if owner_host == host and pid.isdigit() and not alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)
            log.info("trial %d was left running by a stopped process: queued again", trial.number)
