"""The sweeper's settings schema, registered as Hydra's own plugins register theirs: `hydra/sweeper/optuna.yaml`
extends it, so a value of the wrong type (`hydra.sweeper.n_trials=abc`) is refused while the config is composed,
before anything is written."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


class Direction(Enum):
    minimize = 1
    maximize = 2


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.makemore_optuna.optuna_sweeper.OptunaSweeper"
    direction: Direction = Direction.minimize
    study_name: Optional[str] = None
    storage: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 1
    sampler: Any = None  # an Optuna sampler's config: hydra/sweeper/sampler=tpe or random
    pruner: Any = None  # an Optuna pruner's config: hydra/sweeper/pruner=none, median, successive_halving, hyperband
    params: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_schema", node=OptunaSweeperConf, provider="makemore")
