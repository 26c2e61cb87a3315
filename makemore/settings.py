"""The top-level keys of a run's config (conf/train.yaml), and which of them define what a run computes.

A key marked WATCH says how a run is watched, stored or started, never what it computes: it is left out of run
names, HParams and leaderboard columns, and may change beside rerun= and resume= (the new run's saved config
says so). A key marked SELECTS names the run that rerun= or resume= take, or the trial a sweeper gave it: it is
watch-only, but never changed beside them. Every other key is part of the run's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

WATCH = {"role": "watch"}
SELECTS = {"role": "selects"}


@dataclass
class Settings:
    """The top-level keys of conf/train.yaml: their types here, their defaults there (a test keeps them equal)."""

    seed: int = 42
    steps: int = 3000
    batch_size: int | None = 256
    eval_interval: int = field(default=150, metadata=WATCH)
    log_interval: int = field(default=100, metadata=WATCH)
    threads: int = field(default=1, metadata=WATCH)
    device: str = field(default="cpu", metadata=WATCH)
    progress: bool = field(default=True, metadata=WATCH)
    samples: int = field(default=20, metadata=WATCH)
    target: float | None = 2.2
    label_smoothing: float = 0.0
    checkpoint_interval: int = field(default=1000, metadata=WATCH)
    diverge_above: float | None = field(default=100.0, metadata=WATCH)
    overfit_batch: int = 0
    early_stopping: int = 0
    rerun: str | None = field(default=None, metadata=SELECTS)
    resume: str | None = field(default=None, metadata=SELECTS)
    use_current_data: bool = field(default=False, metadata=WATCH)
    trial: int | None = field(default=None, metadata=SELECTS)


# Config groups with the same roles: how a run is logged, and the named sweep that launched it.
WATCH_GROUPS = ("logger",)
SELECTING_GROUPS = ("sweep",)

RUN_SELECTORS = tuple(f.name for f in fields(Settings) if f.metadata == SELECTS) + SELECTING_GROUPS
WATCH_KEYS = tuple(f.name for f in fields(Settings) if f.metadata == WATCH) + WATCH_GROUPS + RUN_SELECTORS
