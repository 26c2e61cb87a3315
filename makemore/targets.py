"""A `_target_` (module.Class) and the object it names: the one import that loggers, models and the model registry
share, where Hydra's instantiate would build the object too early for the checks a run makes first."""

from __future__ import annotations

import importlib
from typing import Any


def import_target(target: str) -> Any:
    """The object `target` names (module.attribute); ImportError or AttributeError when there is none."""
    module, _, name = target.rpartition(".")
    if not module:
        raise ImportError(f"{target!r} names no module (module.Class)")
    return getattr(importlib.import_module(module), name)
