"""What differs between Hydra 1.3 and 1.4 (with OmegaConf 2.3 and 2.4), in one place, so that both run with no
warning: the version base, resolver registration, and the execution whitelist 1.4 asks of `instantiate`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import hydra
import omegaconf
from omegaconf import OmegaConf

# Hydra 1.4 deprecates version_base (and warns when it is passed); 1.3 warns when it is missing.
VERSION_BASE: dict[str, str] = {} if int(hydra.__version__.split(".")[1]) >= 4 else {"version_base": "1.3"}
OMEGACONF_2_4 = int(omegaconf.__version__.split(".")[1]) >= 4

# What a run's config may name for Hydra to call: makemore's callbacks, the sweeper and launchers it ships with or
# composes, and Optuna's samplers and pruners. A user's own model is built by makemore.models, not by Hydra.
TRUSTED_TARGETS = [
    "makemore.*",
    "hydra_plugins.makemore_optuna.*",
    "hydra_plugins.makemore_population.*",
    "hydra_plugins.hydra_joblib_launcher.*",
    "hydra_plugins.hydra_submitit_launcher.*",
    "optuna.samplers.*",
    "optuna.pruners.*",
]
HAS_WHITELIST = "execution_whitelist" in inspect.signature(hydra.main).parameters


def hydra_main(config_name: str, config_path: str) -> Callable:
    """`@hydra.main` for this Hydra: the version base it expects, and the trusted targets where it asks for them."""
    whitelist = {"execution_whitelist": TRUSTED_TARGETS} if HAS_WHITELIST else {}
    return hydra.main(config_path=config_path, config_name=config_name, **VERSION_BASE, **whitelist)


def instantiate(config: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with the trusted targets passed where Hydra asks for them (a launcher's worker
    process runs outside `hydra_main`'s context)."""
    from hydra.utils import instantiate as hydra_instantiate

    whitelist = {"_execution_whitelist_": TRUSTED_TARGETS} if HAS_WHITELIST else {}
    return hydra_instantiate(config, **whitelist, **kwargs)


def register_resolver(name: str, resolver: Callable, use_cache: bool) -> None:
    """OmegaConf 2.4 renames register_new_resolver to register_resolver (2.3's register_resolver is the legacy one)."""
    register = OmegaConf.register_resolver if OMEGACONF_2_4 else OmegaConf.register_new_resolver
    register(name, resolver, use_cache=use_cache)


def configure_console_log(config: Any, hydra_context: Any) -> None:
    """Hydra's own logging (the console), as its basic launcher sets it between jobs."""
    from hydra.core.utils import configure_log

    whitelist = {"execution_whitelist": hydra_context.execution_whitelist} if HAS_WHITELIST else {}
    configure_log(config.hydra.hydra_logging, config.hydra.verbose, **whitelist)


def job_id(number: int) -> int | str:
    """A sweep job's hydra.job.id: 1.4 makes it a string."""
    return str(number) if HAS_WHITELIST else number


def override_dirname(config: Any, overrides: list) -> None:
    """Set hydra.job.override_dirname for a member's `overrides` (parsed), as 1.3 writes it when it composes; 1.4
    resolves it from hydra.overrides.task when read (an interpolation: nothing to set)."""
    job = config.hydra.job
    if OmegaConf.is_interpolation(job, "override_dirname"):
        return
    from hydra._internal.config_loader_impl import get_overrides_dirname

    settings = job.config.override_dirname
    job.override_dirname = get_overrides_dirname(
        overrides=overrides,
        kv_sep=settings.kv_sep,
        item_sep=settings.item_sep,
        exclude_keys=settings.exclude_keys,
    )
