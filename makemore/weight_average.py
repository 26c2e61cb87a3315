"""An exponential moving average of a model's weights (`ema_decay=`), evaluated beside the weights themselves.

At a high learning rate the dev loss of the current weights swings from step to step and, until the schedule
anneals, ranks runs by their lr rather than by where they end; the average's dev loss says where a run is
heading (measured on sweep=optuna_mlp in docs/benchmarks.md), so it is what an Optuna pruner judges when it is on.
The run's own weights, losses and samples stay those of the weights trained.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

AVERAGE = "weight_average"  # its key in a checkpoint
AVERAGE_DEV = "loss/dev_ema"  # its dev loss at each evaluation: logged, in history.csv, and judged by a pruner
JUDGED = "dev of the weights' moving average"  # what a trial pruned on it says it was judged by
# early on the average follows the weights closely: decay (1 + n) / (10 + n) after n updates, up to ema_decay
WARMUP_UPDATES = 10


class WeightAverage:
    """The average, as a model of its own beside the trained one (evaluated as it is, never trained), updated
    after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float, saved: dict | None = None):
        self.model = copy.deepcopy(model)
        if saved:
            self.model.load_state_dict(saved["weights"])
        self.decay, self.updates = decay, saved["updates"] if saved else 0
        pairs = zip(self.model.state_dict().values(), model.state_dict().values())  # tensors that alias the weights
        self.pairs = [(average, weight) for average, weight in pairs if weight.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (WARMUP_UPDATES + self.updates))
        for average, weight in self.pairs:
            average.lerp_(weight, 1 - decay)

    def saved(self) -> dict:
        """What a checkpoint keeps of it: resume= continues the same average."""
        return {"weights": self.model.state_dict(), "updates": self.updates}
