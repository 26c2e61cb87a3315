"""Learning-rate schedules: the `schedule` group's options (each one's keys, defaults and ranges, written once
here) and the learning rate each gives a step. The lr is a pure function of the step, so a resumed run needs no
scheduler state."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from makemore.fields import FRACTION, POSITIVE_NUMBER, Preset, Range, ranged

UNIT_INTERVAL = Range(lambda v: 0 <= v <= 1, "a number in [0, 1]")


@dataclass
class ConstantSchedule:
    """The same lr every step (the seed's full-batch descent)."""

    name: str


@dataclass
class StepSchedule:
    """The lectures': lr, then lr * gamma after a fraction of the steps."""

    name: str
    decay_at: float = ranged(Range(lambda v: 0 <= v <= 1, "a fraction of the steps in [0, 1]"), 0.5)
    gamma: float = ranged(POSITIVE_NUMBER, 0.1)


@dataclass
class WarmupSchedule:
    """A linear warmup over a fraction of the steps, then down to min_factor * lr (cosine or linear)."""

    name: str
    warmup: float = ranged(Range(FRACTION.test, "a fraction of the steps in [0, 1)"), 0.02)
    min_factor: float = ranged(UNIT_INTERVAL, 0.0)  # the final lr as a fraction of lr


@dataclass
class ExponentialSchedule:
    """Lecture 2's learning-rate finder: the lr moves geometrically from optim.lr to lr_end over the run."""

    name: str
    lr_end: float = ranged(POSITIVE_NUMBER, 1.0)


# schedule=<name>.
SCHEDULES = {
    "constant": Preset(ConstantSchedule),
    "step": Preset(StepSchedule),
    "cosine": Preset(WarmupSchedule, {"min_factor": 0.05}),
    "linear": Preset(WarmupSchedule),
    "exponential": Preset(ExponentialSchedule),
}


def lr_schedule(cfg, steps: int, base_lr: float) -> Callable[[int], float]:
    """The multiplier of the base lr at each step, for the `schedule` group's option. Reads the config once."""
    name = cfg.name
    if name == "constant":
        return lambda step: 1.0
    if name == "step":  # the lectures: lr, then lr * gamma after a fraction of the run
        decay_step, gamma = cfg.decay_at * steps, cfg.gamma
        return lambda step: gamma if step >= decay_step else 1.0
    if name == "exponential":  # lecture 2's lr finder: lr moves from optim.lr to lr_end over the run
        ratio, last = cfg.lr_end / base_lr, max(1, steps - 1)
        return lambda step: ratio ** (step / last)
    # cosine and linear: linear warmup, then down to min_factor along a half cosine or a straight line
    warmup, floor = int(cfg.warmup * steps), cfg.min_factor
    shape = (lambda t: 0.5 * (1 + math.cos(math.pi * t))) if name == "cosine" else (lambda t: 1 - t)

    def warmup_then_decay(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return floor + (1 - floor) * shape((step - warmup) / max(1, steps - warmup))

    return warmup_then_decay


def learning_rates(optim, schedule, steps: int) -> Callable[[int], float]:
    """The lr each step takes: optim.lr times the schedule's multiplier."""
    base = float(optim.lr)
    factor = lr_schedule(schedule, steps, base)
    return lambda step: base * factor(step)
