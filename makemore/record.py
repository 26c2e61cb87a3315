"""A run's record is a contract: its saved config is what ran, and no command but `resume=` changes a run's files.

Hydra writes a run's `.hydra/` record before the task function starts, so the checks live in a Hydra callback
that runs first: it validates the config, swaps in the saved config for `rerun=` and `resume=`, and refuses a
directory that already holds something, all before Hydra creates or writes anything.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import traceback
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from makemore import lock
from makemore.checkpoint import load_checkpoint
from makemore.config import upgrade
from makemore.errors import MakemoreError, refuse, stop_sweep_on_signals
from makemore.preflight import pick_device, prepare
from makemore.provenance import check_source
from makemore.redact import refuse_written_passwords
from makemore.rundir import CHECKPOINT, CONFIG, ENSEMBLE, SWEEP_RECORD, finished, is_watch_key, read_overrides
from makemore.search import SWEEPER
from makemore.settings import RUN_SELECTORS
from makemore.shell import rescore_command, train_command
from makemore.workers import name_the_sweep

POPULATION_LAUNCHER = "hydra_plugins.makemore_population.population_launcher.PopulationLauncher"


class RunRecord(Callback):
    """Checks a run, or the base config of a sweep, before Hydra writes anything."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        stop_unless_it_passes(check_run, config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        stop_unless_it_passes(check_sweep, config)


def stop_unless_it_passes(check, config: DictConfig) -> None:
    """Hydra turns an exception in a callback into a warning and goes on; a failed check must stop the run."""
    try:
        check(config)
    except MakemoreError as e:
        refuse(e)
    except Exception:
        traceback.print_exc()  # a bug in the check itself: its traceback, and no run
        raise SystemExit(1) from None


def check_run(config: DictConfig) -> None:
    """Validate a single run's config in place (the saved one for rerun=/resume=) and refuse an occupied directory."""
    refuse_written_passwords(written_strings(config))
    overrides = list(config.hydra.overrides.task)
    with read_write(config), open_dict(config):
        ran = job_config(config)
        if config.get("resume"):
            refuse_other_overrides("resume", overrides)
            ran = resumable(Path(config.resume))
            ran.resume = config.resume
        elif config.get("rerun"):
            refuse_other_overrides("rerun", overrides)
            ran, config.hydra.overrides.task = saved_run(Path(config.rerun))
            ran.rerun = config.rerun  # lineage only: the config above is complete without the source run
            ran.trial = None  # a rerun of an Optuna trial's run is a run of its own, not part of the study
        for key in watched_overrides(overrides):  # how the run is watched may change; what it computes may not
            ran[key] = config[key]
        ran.use_current_data = bool(config.get("use_current_data"))  # asked of each command, never inherited
        checked, items, _ = prepare(ran)
        source = config.get("resume") or config.get("rerun")
        if source:
            what = "resume" if config.get("resume") else "rerun"
            check_source(what, Path(source), checked, items, str(pick_device(checked.device)))
        for key in [key for key in config if key != "hydra"]:
            del config[key]
        config.merge_with(checked)
        config.hydra.run.dir = run_dir = str(config.hydra.run.dir)  # resolved once: what we check is what is used
    if not config.get("resume"):
        refuse_occupied(Path(run_dir), "hydra.run.dir")
    lock.hold(Path(run_dir))  # this process writes it; a second (two resume= of one run) is refused


def check_sweep(config: DictConfig) -> None:
    """Validate a sweep's base config and refuse an occupied sweep directory."""
    if config.get("resume") or config.get("rerun"):
        raise MakemoreError("rerun= and resume= take one run at a time; drop -m")
    refuse_written_passwords(written_strings(config))
    prepare(config)  # each member is checked again with its own overrides
    check_sweeper_settings(config.hydra.sweeper)
    check_launcher_settings(config.hydra.launcher)
    with read_write(config.hydra.sweep):  # Hydra 1.4 marks this node read-only itself
        config.hydra.sweep.dir = sweep_dir = str(config.hydra.sweep.dir)
    if not continues_a_sweep(config, Path(sweep_dir)):
        refuse_occupied(Path(sweep_dir), "hydra.sweep.dir")
    if config.hydra.launcher.get("plan"):
        sweep_dir = plan_only(config)
    if config.hydra.sweeper.get("_target_") != SWEEPER:  # Optuna's processes share a study and its directory
        lock.hold(Path(sweep_dir))
    stop_sweep_on_signals(Path(sweep_dir))
    name_the_sweep()  # before any worker starts: each ends with this process


def plan_only(config: DictConfig) -> str:
    """hydra.launcher.plan=true: the sweep composes and plans in a throwaway directory (an Optuna study in a new
    journal there), removed when the process ends, so nothing is written where the sweep would run."""
    throwaway = tempfile.mkdtemp(prefix="makemore-plan-")
    atexit.register(shutil.rmtree, throwaway, ignore_errors=True)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweep.dir = throwaway
        if config.hydra.sweeper.get("_target_") == SWEEPER:
            config.hydra.sweeper.storage = None
    return throwaway


def check_sweeper_settings(sweeper: DictConfig) -> None:
    """The Optuna sweeper's counts: their types are its schema's (hydra_plugins/makemore_optuna/config.py)."""
    if sweeper.get("_target_") != SWEEPER:
        return
    for key in ("n_trials", "n_jobs"):
        if sweeper[key] < 1:
            raise MakemoreError(f"hydra.sweeper.{key}={sweeper[key]} is not allowed: it must be at least 1")


def check_launcher_settings(launcher: DictConfig) -> None:
    """The population launcher's numbers: their types are its schema's (hydra_plugins/makemore_population/config.py)."""
    if launcher.get("_target_") != POPULATION_LAUNCHER:
        return
    for key in ("max_members", "workers"):
        value = launcher[key]
        if value is not None and value < 1:
            nullable = "" if key == "max_members" else ", or null for its default"
            raise MakemoreError(f"hydra.launcher.{key}={value} is not allowed: it must be at least 1{nullable}")
    if launcher.max_failures < 0:
        raise MakemoreError(
            f"hydra.launcher.max_failures={launcher.max_failures} is not allowed: it must be 0 (no restart) or more"
        )


def continues_a_sweep(config: DictConfig, sweep_dir: Path) -> bool:
    """The same sweep command pointed at its own sweep directory continues it: its finished members are kept,
    interrupted ones resume, an Optuna study goes on (a resume, or a second process). Another sweep is refused."""
    saved = sweep_dir / SWEEP_RECORD
    if not saved.is_file():
        return False
    earlier = OmegaConf.load(saved)
    if list(earlier.hydra.overrides.task) != list(config.hydra.overrides.task):
        raise MakemoreError(
            f"hydra.sweep.dir={sweep_dir} holds another sweep (its overrides were "
            f"{' '.join(earlier.hydra.overrides.task) or 'none'}); continue it with those, or pick a new directory"
        )
    return True


def written_strings(config: DictConfig) -> list[tuple[str, str]]:
    """Every URL-like string of the config as written (unresolved), by key: where a password could hide."""
    found = []

    def walk(prefix: str, node) -> None:
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            path = f"{prefix}{key}"
            if isinstance(value, (dict, list)):
                walk(f"{path}.", value)
            elif isinstance(value, str) and "://" in value:
                found.append((path, value))

    walk("", OmegaConf.to_container(config, resolve=False))
    return found


def job_config(config: DictConfig) -> DictConfig:
    """The task's part of a config Hydra composed: everything but the `hydra` node."""
    return OmegaConf.create({k: config[k] for k in config if k != "hydra"})


def refuse_occupied(directory: Path, key: str) -> None:
    """A run starts only in a new or empty directory: it never mixes its files with another run's."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise MakemoreError(
            f"{key}={directory} already exists and is not empty: a run never writes into another's "
            f"files; leave {key} to its default or pick a new directory"
        )


def watched_overrides(overrides: list[str]) -> list[str]:
    """The top-level watch keys that `overrides` set (logger, progress, samples, ...), but those that pick a run."""
    keys = [o.split("=", 1)[0].lstrip("+~").split(".")[0] for o in overrides]
    return [key for key in dict.fromkeys(keys) if is_watch_key(key) and key not in RUN_SELECTORS]


def refuse_other_overrides(what: str, overrides: list[str]) -> None:
    """rerun= and resume= take a run's saved config as it is, but for how it is watched: others would change it."""
    others = [o for o in overrides if not o.startswith(f"{what}=") and not watched_overrides([o])]
    if others:
        raise MakemoreError(f"{what}= takes the saved config as it is; drop the other overrides {' '.join(others)}")


def saved_run(run_dir: Path) -> tuple[DictConfig, list[str]]:
    """The config a run saved in `.hydra/` and the overrides it was composed with."""
    config_file = run_dir / CONFIG
    if (run_dir / ENSEMBLE).is_file():
        raise MakemoreError(
            f"{run_dir} is an ensemble's record, not a run; score it again with {rescore_command(run_dir)}"
        )
    if not config_file.is_file():
        raise MakemoreError(f"no saved config at {config_file}; rerun=<a run directory under outputs/>")
    return upgrade(OmegaConf.load(config_file)), read_overrides(run_dir)


def resumable(run_dir: Path) -> DictConfig:
    """The config of an interrupted run that can continue; anything else is refused before a byte is written."""
    if not (run_dir / CONFIG).is_file() and not (run_dir / CHECKPOINT).is_file():
        raise MakemoreError(
            f"resume={run_dir}: not a run directory (no {CONFIG}, no {CHECKPOINT}); "
            "resume=<the directory of an interrupted run>"
        )
    if finished(run_dir):
        raise MakemoreError(f"{run_dir} already finished; run it again with {train_command('rerun', run_dir)}")
    if not (run_dir / CHECKPOINT).is_file():
        raise MakemoreError(
            f"{run_dir} has no {CHECKPOINT} to resume from (one is written every checkpoint_interval "
            f"steps and on Ctrl-C); start it again with {train_command('rerun', run_dir)}"
        )
    return upgrade(OmegaConf.create(load_checkpoint(run_dir / CHECKPOINT, {"optimizer", "state"})["config"]))
