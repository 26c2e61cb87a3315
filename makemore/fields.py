"""A config field's allowed range, written beside the field, and a config dataclass's defaults as a Hydra node.

Every option's keys and defaults are a dataclass (or a model's constructor) written where its code is; makemore.schema
checks a run against the ranges found here, and makemore.config stores the defaults in Hydra's ConfigStore.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any


@dataclass(frozen=True)
class Range:
    """An allowed range: a test a value of the right type passes, and the words that say what is allowed."""

    test: Callable[[Any], bool]
    words: str


def one_of(*names: str) -> Range:
    """A range of named choices."""
    return Range(lambda v: v in names, "one of " + ", ".join(names))


POSITIVE = Range(lambda v: v >= 1, "a positive integer")
COUNT = Range(lambda v: v >= 0, "an integer >= 0")
NON_NEGATIVE = Range(lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
POSITIVE_NUMBER = Range(lambda v: v > 0 and math.isfinite(v), "a positive number")
FRACTION = Range(lambda v: 0 <= v < 1, "a number in [0, 1)")
SEED = Range(lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)")

# The constructor annotations the registered models share.
PositiveInt = Annotated[int, POSITIVE]
Fraction = Annotated[float, FRACTION]


def ranged(range_: Range, default: Any = dataclasses.MISSING, **metadata: Any) -> Any:
    """A dataclass field with its allowed range (and any other metadata); no default: each option gives its own.
    A list default is copied for each instance."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=default.copy, metadata={"range": range_, **metadata})
    return dataclasses.field(default=default, metadata={"range": range_, **metadata})


def field_range(schema: type, name: str) -> Range | None:
    """The range written beside a dataclass's field, if any."""
    return next(f for f in dataclasses.fields(schema) if f.name == name).metadata.get("range")


def defaults_of(schema: type) -> dict:
    """A config dataclass's fields that have a default, with it, in the dataclass's order."""
    values = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return values


@dataclass(frozen=True)
class Preset:
    """An option of a group whose options are one dataclass each (schedule=<name>): its config class, with
    `values` laid over the class's defaults."""

    config: type
    values: dict = dataclasses.field(default_factory=dict)

    def node(self, name: str) -> dict:
        """The option's group node as Hydra composes it: its name, then each key in the class's order."""
        values = {**defaults_of(self.config), **self.values}
        return {"name": name, **{f.name: values[f.name] for f in dataclasses.fields(self.config) if f.name in values}}
