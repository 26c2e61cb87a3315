"""The model registry: each built-in model's config options, read from where its class is.

A class registers itself (`@register("mlp", budget_steps=30000)` above it); its constructor's signature is its
config: the keys, their types and defaults, and each key's allowed range as an `Annotated` constraint. From that
one source come the `model` group's options, the `budget` group (sweep=models' steps per option), the
`sweep=models` list (makemore.config stores them in Hydra's ConfigStore) and the schema makemore.schema checks
a run against.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from omegaconf import MISSING

from makemore.fields import Range, defaults_of
from makemore.targets import import_target


@dataclass(frozen=True)
class Option:
    """One option of the `model` group: `model=<name>`."""

    name: str
    model_class: type
    preset: dict  # constructor values this option sets over the class's defaults (trigram_count's alpha)
    budget_steps: int | None  # steps for about 30 s of training on one core (sweep=models); None: trained by counting
    budget_optim: str | None  # the optimizer it trains with at that budget, where not the default one

    def config(self) -> dict:
        """The option's node as Hydra composes it: `_target_`, `name`, then every constructor option."""
        defaults = defaults_of(schema_of(self.model_class))
        return {"_target_": target_of(self.model_class), "name": self.name, **defaults, **self.preset}


# The built-in models by option name, in the order sweep=models lists them.
OPTIONS: dict[str, Option] = {}


def register(
    name: str, budget_steps: int | None, budget_optim: str | None = None, **preset: Any
) -> Callable[[type], type]:
    """Class decorator: the class becomes `model=<name>`, with `preset` over its constructor's defaults."""

    def add(model_class: type) -> type:
        OPTIONS[name] = Option(name, model_class, preset, budget_steps, budget_optim)
        return model_class

    return add


def target_of(model_class: type) -> str:
    """The `_target_` that names a model class in a config: its import path."""
    return f"{model_class.__module__}.{model_class.__qualname__}"


@functools.cache
def schema_of(model_class: type) -> type:
    """A dataclass of the class's config, read from its constructor: `_target_` and `name`, then each option
    with its type, its default (MISSING where the constructor has none) and its range as field metadata."""
    hints = typing.get_type_hints(model_class.__init__, include_extras=True)
    fields: list[tuple] = [("_target_", str), ("name", str)]
    for parameter in list(inspect.signature(model_class.__init__).parameters.values())[1:]:
        if parameter.name == "vocab_size":  # the data's, not the config's
            continue
        annotation = hints[parameter.name]
        ranges = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, Range)]
        default = MISSING if parameter.default is inspect.Parameter.empty else parameter.default
        metadata = {"range": ranges[0]} if ranges else {}
        base = annotation.__origin__ if typing.get_origin(annotation) is Annotated else annotation
        fields.append((parameter.name, base, field(default=default, metadata=metadata)))
    return dataclasses.make_dataclass(f"{model_class.__name__}Config", fields)


# Modules whose models moved: configs saved by earlier versions name them there.
MOVED_MODULES = {"makemore.sequence_models": "makemore.models"}


def registered_class(target: str) -> type | None:
    """The built-in class a `_target_` names, under any of its import paths (makemore.models.MLP, or where an
    earlier version kept it); None for any other class."""
    module, _, name = target.rpartition(".")
    try:
        found = import_target(f"{MOVED_MODULES.get(module, module)}.{name}")
    except (ImportError, AttributeError):  # no such module or class
        return None
    return found if any(found is option.model_class for option in OPTIONS.values()) else None


def current_target(target: str) -> str:
    """A built-in model's `_target_` as this version writes it; any other target as it is."""
    found = registered_class(target)
    return target_of(found) if found else target


def budget_node(name: str) -> dict:
    """`budget=<name>`: that model at sweep=models' common budget (a global preset, like `experiment`)."""
    option = OPTIONS[name]
    defaults = [{"override /model": name}] + ([{"override /optim": option.budget_optim}] if option.budget_optim else [])
    return {"defaults": defaults, **({"steps": option.budget_steps} if option.budget_steps is not None else {})}


def models_sweep_node() -> dict:
    """`sweep=models`: every built-in model side by side, each at its budget."""
    return {"hydra": {"sweeper": {"params": {"budget": ",".join(OPTIONS)}}}}
