"""The keys of a run's config that belong to no swappable part: the top-level keys and the `data` section, each
with its type, default and allowed range, written once here (makemore.config stores them for Hydra).

A key marked WATCH says how a run is watched, stored or started, never what it computes: it is left out of run
names, HParams and leaderboard columns, and may change beside rerun= and resume= (the new run's saved config
says so). A key marked SELECTS names the run that rerun= or resume= take, or the trial a sweeper gave it: it is
watch-only, but never changed beside them. Every other key is part of the run's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from makemore.fields import COUNT, FRACTION, POSITIVE, POSITIVE_NUMBER, SEED, Range, defaults_of, one_of, ranged

WATCH = {"role": "watch"}
SELECTS = {"role": "selects"}


@dataclass
class Settings:
    """The top-level keys: python train.py steps=500 seed=3 ..."""

    seed: int = ranged(SEED, 42)
    steps: int = ranged(COUNT, 3000)
    # null trains on the whole train split every step
    batch_size: int | None = ranged(Range(POSITIVE.test, "a positive integer, or null for the whole train split"), 256)
    # steps between dev evaluations on the full dev split: 20 points over 3,000 steps
    eval_interval: int = ranged(POSITIVE, 150, **WATCH)
    log_interval: int = ranged(POSITIVE, 100, **WATCH)  # steps between train-loss points (and divergence checks)
    threads: int = ranged(POSITIVE, 1, **WATCH)  # tiny models run ~12x slower on 2 threads than on 1
    # cpu, cuda, mps, or auto (cuda, then mps, then cpu)
    device: str = ranged(one_of("cpu", "cuda", "mps", "auto"), "cpu", **WATCH)
    progress: bool = field(default=True, metadata=WATCH)  # the tqdm progress bar
    samples: int = ranged(COUNT, 20, **WATCH)  # lines of samples.txt
    # the lectures' dev-loss target, for the built-in names; elsewhere null (settings_node)
    target: float | None = ranged(Range(POSITIVE_NUMBER.test, "a positive number, or null for no target"), 2.2)
    # of the training loss only; reported losses are plain cross-entropy
    label_smoothing: float = ranged(FRACTION, 0.0)
    # stop after this many evaluations without a better dev loss, keeping the best weights (0: off)
    early_stopping: int = ranged(
        Range(COUNT.test, "an integer >= 0: evaluations without a better dev loss (0: off)"), 0
    )
    # stop at the first evaluation whose dev loss is below the target (what `seconds_to_target` searches time)
    stop_at_target: bool = False
    # also evaluate a moving average of the weights (this decay per step), logged as loss/dev_ema; an Optuna
    # pruner judges it: mid-run it ranks runs by where they end, not by their lr (makemore/weight_average.py)
    ema_decay: float | None = ranged(
        Range(lambda v: 0 < v < 1, "a number in (0, 1), e.g. 0.98, or null for none"), None, **WATCH
    )
    # debug=overfit: train on one fixed batch of this many examples, then say pass or fail
    overfit_batch: int = ranged(Range(COUNT.test, "an integer >= 0 (0: off; debug=overfit sets 32)"), 0)
    # a log window's mean train loss above this (nats) stops the run as diverged; null: NaN only
    diverge_above: float | None = ranged(
        Range(POSITIVE_NUMBER.test, "a positive number of nats, or null to stop only on NaN"), 100.0, **WATCH
    )
    # steps between checkpoints (0: none); Ctrl-C and SIGTERM also write one
    checkpoint_interval: int = ranged(Range(COUNT.test, "an integer >= 0 (0: no periodic checkpoints)"), 1000, **WATCH)
    # at a multirun's end, also mix its best K finished runs (by dev) with equal weights: an ensemble's record in
    # <sweep dir>/ensembles/ and a row on the sweep's leaderboard (makemore.mixture); 0: none
    ensemble_best: int = ranged(Range(lambda v: v == 0 or v >= 2, "0 (none), or a number of runs >= 2"), 0, **WATCH)
    rerun: str | None = field(default=None, metadata=SELECTS)  # rerun=<run dir>: train its config again, anew
    resume: str | None = field(default=None, metadata=SELECTS)  # resume=<run dir>: continue it in its own directory
    # with rerun=/resume=: train on the data file as it is now, even if it changed since the run
    use_current_data: bool = field(default=False, metadata=WATCH)
    # set by hydra/sweeper=optuna: the Optuna trial this sweep member reports its dev losses to
    trial: int | None = ranged(
        Range(lambda v: v >= 0, "a trial number >= 0, set by hydra/sweeper=optuna (or null)"), None, **SELECTS
    )


@dataclass
class DataSettings:
    """The `data` section: which file, and how it is cut into train, dev and test."""

    path: str = ranged(Range(lambda v: v != "", "a file path, or builtin"), "builtin")  # builtin: names.txt
    # index 0: the start and end of every item
    boundary: str = ranged(
        Range(
            lambda v: isinstance(v, str) and len(v) == 1 and v not in "\r\n",
            "one character other than a line end, as a string (quote a digit: data.boundary=\"'0'\")",
        ),
        ".",
    )
    fractions: list[float] = ranged(
        Range(
            lambda v: len(v) == 3 and min(v) > 0 and abs(sum(v) - 1) < 1e-6,
            "three positive numbers summing to 1, e.g. [0.8,0.1,0.1]",
        ),
        [0.8, 0.1, 0.1],
    )
    seed: int = ranged(SEED, 42)  # the lectures' split: random.seed(42); random.shuffle(words)


def settings_node() -> dict:
    """The top-level keys as Hydra composes them: their defaults, the target a figure of the built-in names only."""
    values = defaults_of(Settings)
    return {**values, "target": f"${{names_target:${{data.path}},{values['target']}}}"}


def run_settings(cfg: Any) -> Settings:
    """A run's top-level keys, typed: what a part that needs no section of its own is handed."""
    return Settings(**{f.name: cfg[f.name] for f in fields(Settings)})


# Config groups with the same roles: how a run is logged, and the named sweep that launched it.
WATCH_GROUPS = ("logger",)
SELECTING_GROUPS = ("sweep",)

RUN_SELECTORS = tuple(f.name for f in fields(Settings) if f.metadata.get("role") == "selects") + SELECTING_GROUPS
WATCH_KEYS = tuple(f.name for f in fields(Settings) if f.metadata.get("role") == "watch") + WATCH_GROUPS + RUN_SELECTORS
