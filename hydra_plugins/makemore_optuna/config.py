"""The sweeper's settings schema, registered as Hydra's own plugins register theirs: `hydra/sweeper/optuna.yaml`
extends it, so a value of the wrong type (`hydra.sweeper.n_trials=abc`) is refused while the config is composed,
before anything is written."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


class Direction(Enum):
    minimize = 1
    maximize = 2


@dataclass
class OptunaSweeperConf:
    """hydra.sweeper.*: each key's type and default (hydra/sweeper/optuna.yaml picks the sampler and pruner)."""

    _target_: str = "hydra_plugins.makemore_optuna.optuna_sweeper.OptunaSweeper"
    direction: Direction = Direction.minimize  # of a single objective
    # metrics.json keys to minimise: dev_loss, params, train_seconds, seconds_to_target; two or more: a Pareto front
    objectives: List[str] = field(default_factory=lambda: ["dev_loss"])
    # seconds_to_target of a trial that never reaches the target: its training seconds plus this
    target_penalty: float = 10000.0
    study_name: Optional[str] = None  # null: the sweep directory's name
    # null: an Optuna journal file in the sweep directory; or a journal file path, or a database URL
    storage: Optional[str] = None
    n_trials: int = 20  # finished (complete or pruned) trials the study should hold
    # trials launched at once (in parallel with hydra/launcher=joblib; as one stacked population with
    # hydra/launcher=population)
    n_jobs: int = 1
    # at the end, the best `confirm` trials run again on `confirm_seeds` more seeds each: the leaderboard's seed
    # groups then rank them by mean +- std and say whether the winner's lead exceeds the seed-to-seed spread
    confirm: int = 0
    confirm_seeds: int = 3
    sampler: Any = None  # an Optuna sampler's config: hydra/sweeper/sampler=tpe or random
    pruner: Any = None  # an Optuna pruner's config: hydra/sweeper/pruner=none, median, successive_halving, hyperband
    # with a pruner, trials run with ema_decay=<this> (unless the sweep sets ema_decay) and the pruner judges the
    # dev loss of their weights' moving average, which ranks trials by where they end, not by their lr; null: the
    # weights' own dev loss
    pruning_ema_decay: Optional[float] = 0.98
    params: Dict[str, Any] = field(default_factory=dict)  # the search space, in Hydra's sweep syntax


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_schema", node=OptunaSweeperConf, provider="makemore")
