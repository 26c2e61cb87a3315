"""Config helpers: the resolvers conf/ uses for run-directory names, flattening for HParams, and the upgrade
of configs saved by earlier versions."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# One id per process: Hydra may resolve the run dir more than once, and every resolution must agree.
PROCESS_ID = secrets.token_hex(3)


def safe_dirname(text: str, limit: int = 120) -> str:
    """A directory-name-safe version of an override string such as `model=mlp,optim.lr=0.1`."""
    return re.sub(r"[^A-Za-z0-9=,.+_-]+", "-", text).strip("-")[:limit] or "defaults"


def register_resolvers() -> None:
    """`${uid:}` tells apart runs started in the same second; `${safe:...}` cleans a name for the filesystem;
    `${run_dir:...}` and `${record_dir:...}` point a resumed run at its old directory."""
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: PROCESS_ID)
        OmegaConf.register_new_resolver("safe", safe_dirname)
        # resume=<dir> continues in that directory and leaves its .hydra/ record (what rerun reads) untouched.
        OmegaConf.register_new_resolver("run_dir", lambda resume, fresh: resume or fresh)
        OmegaConf.register_new_resolver("record_dir", lambda resume: None if resume else ".hydra")


def compose_train_config(*overrides: str) -> DictConfig:
    """The config `python train.py <overrides>` would run, composed in-process through Hydra's compose API."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{'model': {'emb': 10}} -> {'model.emb': 10}; lists and None become strings (HParams takes scalars only)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


# Configs saved before models were named by `_target_` said `kind`.
KINDS = {"counts": "makemore.models.NgramCounts", "table": "makemore.models.NgramTable",
         "additive": "makemore.models.Additive", "mlp": "makemore.models.MLP"}


def upgrade(config: DictConfig) -> DictConfig:
    """A config saved by an earlier version: `kind` becomes `_target_`, schedule keys move out of `optim`."""
    if "kind" in config.get("model", {}):
        with open_dict(config):
            config.model._target_ = KINDS[config.model.pop("kind")]
    if "schedule" not in config and "schedule" in config.get("optim", {}):
        keys = [key for key in ("decay_at", "gamma", "warmup", "min_factor", "lr_end") if key in config.optim]
        with open_dict(config):
            config.schedule = {"name": config.optim.schedule, **{key: config.optim[key] for key in keys}}
            for key in ("schedule", *keys):
                del config.optim[key]
    return config


register_resolvers()
