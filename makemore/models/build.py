"""Building the model a config names: a built-in one or a user's own class, by its `_target_`."""

from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf
from torch import nn

from makemore.errors import MakemoreError
from makemore.targets import import_target


def build_model(cfg, vocab_size: int) -> nn.Module:
    """The model class named by cfg._target_, built with cfg's options and the data's vocabulary size.

    Any nn.Module whose constructor takes `vocab_size` and whose forward maps [B, block_size] token ids to
    [B, V] logits will do: a user's own class, importable from the PYTHONPATH, plugs in by config alone. A config
    reaches here checked (makemore.schema) or upgraded (makemore.config), naming a built-in class where it is now.
    """
    options = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name, target = options.pop("name", None), options.pop("_target_")
    try:  # the class a config names is built here, not by Hydra: a user's own model is trusted by design
        return import_target(target)(vocab_size=vocab_size, **options)
    except MakemoreError:
        raise
    except Exception as e:
        raise MakemoreError(f"cannot build model {name} from {target}: {why_not_built(target, e)}") from None


def why_not_built(target: str, error: BaseException) -> str:
    """What stopped a model's class from being found or built, and the fix for that cause."""
    reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    module, _, name = target.rpartition(".")
    try:
        found = importlib.import_module(module) if module else None
    except ImportError as e:
        return f"{type(e).__name__}: {e}; its module must be importable (put its directory on PYTHONPATH)"
    if found is None or not hasattr(found, name):
        return f"module {module or '?'} has no {name!r}; check the spelling of model._target_ (module.Class)"
    return f"its constructor failed ({reason}); check the model's config keys against its __init__ parameters"
