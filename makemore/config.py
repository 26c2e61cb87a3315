"""Config helpers: the resolvers conf/ uses for run-directory names, flattening for HParams, and the upgrade
of configs saved by earlier versions."""

from __future__ import annotations

import functools
import math
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from makemore import loggers, models, optimizers
from makemore.fields import defaults_of
from makemore.hydra_versions import VERSION_BASE, register_resolver
from makemore.models.registry import budget_node, models_sweep_node
from makemore.rundir import CONFIG, HYDRA_DIR, SWEEP_RECORD, ended_metrics, is_watch_key
from makemore.schedules import SCHEDULES
from makemore.settings import DataSettings, settings_node

# The config tree: conf/ at a checkout's top, shipped inside an installed package as makemore/conf (pyproject.toml).
PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = PACKAGED_CONF if PACKAGED_CONF.is_dir() else Path(__file__).resolve().parents[1] / "conf"
CONFIG_PATH = "pkg://makemore.conf" if PACKAGED_CONF.is_dir() else str(CONF_DIR)  # for @hydra.main
BUILTIN_PATHS = (None, "", "builtin")  # data.path values that mean the packaged names.txt
# One id per process: Hydra may resolve the run dir more than once, and every resolution must agree.
PROCESS_ID = secrets.token_hex(3)


def safe_dirname(text: str, limit: int = 120) -> str:
    """A directory-name-safe version of an override string such as `model=mlp,optim.lr=0.1`."""
    return re.sub(r"[^A-Za-z0-9=,.+_-]+", "-", text).strip("-")[:limit] or "defaults"


def process_id() -> str:
    """`${uid:}`: tells apart runs started in the same second."""
    return PROCESS_ID


def run_dir(resume: str | None, fresh: str) -> str:
    """`${run_dir:...}`: resume=<dir> continues in that directory, whose .hydra/ record stays untouched."""
    return resume or fresh


def names_target(path: str | None, target: float) -> float | None:
    """`${names_target:...}`: the lectures' 2.2 dev target is a figure for their names.txt; other data has none."""
    return target if path in BUILTIN_PATHS else None


def register_resolvers() -> None:
    """Every `${name:...}` resolver conf/ uses (besides Hydra's own). `uid` is cached in the config, as Hydra's
    `now` is: a sweep's jobs get a copy of that cache, so a launcher's worker processes resolve the parent's
    sweep directory, not one of their own."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            register_resolver(name, resolver, use_cache=name == "uid")


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def is_config_group(key: str) -> bool:
    """Whether a top-level key is a config group: a folder of conf/, or a group stored in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    return (CONF_DIR / key).is_dir() or key in ConfigStore.instance().list("")


def short_names(overrides: Sequence[str]) -> list[str]:
    """Overrides as short as they stay readable, distinguishing values first: a group's choice by its option
    (`model=gru` -> `gru`), a seed as `s43`, a dotted key by its last part (`model.emb=10` -> `emb=10`) unless two
    of them share it. Watch keys (how a run is watched, never what it computes) are left out."""
    kept = [(_key(o), o.partition("=")[2]) for o in overrides if "=" in o and not is_watch_key(o)]
    lasts = [key.rpartition(".")[2] for key, _ in kept]
    names = []
    for (key, value), last in zip(kept, lasts):
        if key == "seed":
            names.append(f"s{value}")
        elif "." not in key and is_config_group(key):  # its option says it all
            names.append(value)
        else:
            names.append(f"{last if lasts.count(last) == 1 else key}={value}")
    return names


def significant(value: str) -> str:
    """A number with a fraction or an exponent at 4 significant digits (`0.013737845955327985` -> `0.01374`); an
    integer or anything else as it was written."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if value.lstrip("+-").isdigit() or not math.isfinite(number) else f"{number:.4g}"


def run_name(model: str, overrides: Sequence[str]) -> str:
    """A single run's name, what tells it apart first: its model and short overrides (`mlp_emb:10_s3`), in
    characters Hydra and bash take unquoted, so `rerun=<its path>` can be typed as it is."""
    kept = [name.replace("=", ":", 1) for name in short_names([o for o in overrides if _key(o) != "model"])]
    return re.sub(r"[^A-Za-z0-9.:+_-]+", "-", "_".join([model, *kept])).strip("-")[:120]


def member_name(sweep_dir: str, overrides: Sequence[str], number: int) -> str:
    """A sweep member's name: the short overrides that vary across the sweep (read from its multirun.yaml), as
    `emb=10 hidden=200 s43`, the same in TensorBoard, W&B and the leaderboard. The job number is added only where
    the values alone may repeat: an Optuna trial starts with its number (`t3 lr=0.01374`, `t3 lr=0.01374 s43` for one
    of its seeds), and a sweep that lists a
    value twice or sweeps a range ends with it (`s1 #3`). Constants like a shared `steps=1500` are left out."""
    swept, unique = swept_keys(Path(sweep_dir) / SWEEP_RECORD)
    kept = [o for o in overrides if not swept or _key(o) in swept]
    name = " ".join(short_names(kept)) or "defaults"
    trial = [o.partition("=")[2] for o in overrides if _key(o) == "trial"]
    if trial:  # its number tells it apart: its values at 4 significant digits (its config keeps every digit)
        shown = [f"{_key(o)}={significant(o.partition('=')[2])}" for o in kept]
        name = f"t{trial[-1]} {' '.join(short_names(shown)) or 'defaults'}"
    elif not unique:
        name = f"{name} #{number}"
    return re.sub(r"[^A-Za-z0-9=,.+_# -]+", "-", name).strip("- ")[:120]


def experiment_hparams(config: dict, trained_by_counting: bool) -> dict:
    """The keys that define what a run computed, flattened; a counting run took no steps and used no optimizer. A
    null (a full-batch run's batch_size, no target) has no HParams value: its cell stays empty, its column typed."""
    hparams = {k: v for k, v in flatten(config).items() if not is_watch_key(k) and v is not None}
    if trained_by_counting:
        hparams = {
            k: v
            for k, v in hparams.items()
            if not k.startswith(("optim.", "schedule.", "batch_size", "label_smoothing", "early_stopping"))
        }
        hparams.update({"steps": 0, "optim.name": "none (counted)"})
    return hparams


def swept_keys(saved: Path) -> tuple[set[str], bool]:
    """The keys a sweep varies (from its multirun.yaml), and whether every member's values are unique: each swept
    list holds distinct values. Without a record: no keys, not unique."""
    if not saved.is_file():
        return set(), False
    stat = saved.stat()
    swept, unique = read_swept_keys(str(saved), stat.st_mtime_ns, stat.st_size)
    return set(swept), unique


@functools.lru_cache(maxsize=16)
def read_swept_keys(saved: str, mtime_ns: int, size: int) -> tuple[frozenset[str], bool]:
    """swept_keys once per version of a record: every member of a sweep names itself from it (~0.1 s a read)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweep = OmegaConf.load(saved).hydra
    params = sweep.sweeper.get("params") or {}
    parsed = OverridesParser.create().parse_overrides([*sweep.overrides.task, *(f"{k}={v}" for k, v in params.items())])
    swept = [o for o in parsed if o.is_sweep_override()]
    unique = all(
        o.is_choice_sweep() and len(set(values := list(o.sweep_string_iterator()))) == len(values) for o in swept
    )
    return frozenset(o.get_key_element() for o in swept), unique


def record_dir(resume: str | None, output_dir: str) -> str | None:
    """Where Hydra writes a run's record: nowhere for resume=, or for a member of a continued sweep whose
    directory already holds its record (no command rewrites a run's files); else .hydra."""
    return None if resume or (Path(output_dir) / CONFIG).is_file() else HYDRA_DIR


def job_log(output_dir: str, job_name: str) -> str:
    """The job's log file; a member that already ended (in a continued sweep) logs nowhere, its files untouched."""
    return os.devnull if ended_metrics(Path(output_dir)) else str(Path(output_dir) / f"{job_name}.log")


def compose_train_config(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """The config `python train.py <overrides>` would run, composed in-process through Hydra's compose API (with
    Hydra's own node, as a launcher or sweeper sees it, if asked)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE):
        return compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{'model': {'emb': 10}} -> {'model.emb': 10}; lists become strings (HParams takes scalars only)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if value is None or isinstance(value, (int, float, str, bool)) else str(value)
    return flat


# Configs saved before models were named by `_target_` said `kind`.
KINDS = {"counts": models.NgramCounts, "table": models.NgramTable, "additive": models.Additive, "mlp": models.MLP}


def upgrade(config: DictConfig) -> DictConfig:
    """A config saved by an earlier version: `kind` becomes `_target_`, a built-in model's `_target_` names where
    its class is now, schedule keys move out of `optim`, the logger's `backends` become sections."""
    if "kind" in config.get("model", {}):
        with open_dict(config):
            config.model._target_ = models.target_of(KINDS[config.model.pop("kind")])
    if "_target_" in config.get("model", {}):
        config.model._target_ = models.current_target(config.model._target_)
    if "schedule" not in config and "schedule" in config.get("optim", {}):
        keys = [key for key in ("decay_at", "gamma", "warmup", "min_factor", "lr_end") if key in config.optim]
        with open_dict(config):
            config.schedule = {"name": config.optim.schedule, **{key: config.optim[key] for key in keys}}
            for key in ("schedule", *keys):
                del config.optim[key]
    if "backends" in config.get("logger", {}):  # a list of backend names, before each was a section with `_target_`
        old = config.logger
        sections = {name: {**loggers.option_node(name)[name], **(old.get(name) or {})} for name in old.backends}
        with open_dict(config):
            config.logger = sections
    return config


def register_options() -> None:
    """The options whose keys and defaults are written beside their code, stored in Hydra's ConfigStore: the
    top-level keys and the `data` group's `names` (makemore.settings), the `optim` and `schedule` groups
    (makemore.optimizers, makemore.schedules), the `logger` group's built-in backends (from each one's settings
    dataclass, makemore.loggers), and the `model` group's built-in models with their `budget` presets and
    `sweep=models` (from each one's constructor, makemore.models)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="settings", node=settings_node())
    store.store(group="data", name="names", node=defaults_of(DataSettings))
    for name in optimizers.OPTIONS:
        store.store(group="optim", name=name, node=optimizers.OPTIONS[name].node(name), package="_global_")
    for name, preset in SCHEDULES.items():
        store.store(group="schedule", name=name, node=preset.node(name))
    for name in loggers.BACKENDS:
        store.store(group="logger", name=name, node=loggers.option_node(name))
    for name, option in models.OPTIONS.items():
        store.store(group="model", name=name, node=option.config())
        store.store(group="budget", name=name, node=budget_node(name), package="_global_")
    store.store(group="sweep", name="models", node=models_sweep_node(), package="_global_")


RESOLVERS = {
    "uid": process_id,
    "run_dir": run_dir,
    "record_dir": record_dir,
    "job_log": job_log,
    "run_name": run_name,
    "member_name": member_name,
    "names_target": names_target,
}
register_resolvers()
register_options()
