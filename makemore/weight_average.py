"""An exponential moving average of the weights (`ema_decay=`), evaluated beside the weights themselves: a training
feature (makemore.features) of every member that asks for it, alone or in a population.

At a high learning rate the dev loss of the current weights swings from step to step and, until the schedule
anneals, ranks runs by their lr rather than by where they end; the average's dev loss says where a run is
heading (measured on sweep=optuna_mlp in docs/benchmarks.md), so it is what an Optuna pruner judges when it is on.
The run's own weights, losses and samples stay those of the weights trained.
"""

from __future__ import annotations

import copy
import time

import torch

from makemore.features import Feature
from makemore.settings import Settings

AVERAGE = "weight_average"  # its key in a checkpoint
AVERAGE_DEV = "loss/dev_ema"  # its dev loss at each evaluation: logged, in history.csv, and judged by a pruner
JUDGED = "dev of the weights' moving average"  # what a trial pruned on it says it was judged by
# early on the average follows the weights closely: decay (1 + n) / (10 + n) after n updates, up to ema_decay
WARMUP_UPDATES = 10


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of the `updates`-th update: up to `decay`, lower while the average is young."""
    return min(decay, (1 + updates) / (WARMUP_UPDATES + updates))


class WeightAverage(Feature):
    """Each asking member's average, held by an engine of the loop's kind beside the trained one (evaluated as it
    is, never trained) and moved toward the member's weights after every step, with the member's own decay."""

    judged = AVERAGE_DEV

    @staticmethod
    def wanted(settings: Settings) -> bool:
        return settings.ema_decay is not None

    def __init__(self, loop) -> None:
        super().__init__(loop)
        members = loop.members
        saved = [(m.resume or {}).get(AVERAGE) for m in members]
        self.models = [copy.deepcopy(m.model) for m in members]  # each average's own model, as its checkpoint's
        for model, kept in zip(self.models, saved):
            if kept:
                model.load_state_dict(kept["weights"])
        self.engine = loop.engine.like(self.models)
        self.decays = [m.settings.ema_decay for m in members]  # None: that member keeps no average
        self.updates = [kept["updates"] if kept else 0 for kept in saved]
        self.pairs()

    def pairs(self) -> None:
        """Each member's average tensors beside the weights they follow, as views made once (and after keep)."""
        self.averages = [self.engine.member_weights(k) for k in range(len(self.decays))]
        self.weights = [self.loop.engine.member_weights(k) for k in range(len(self.decays))]

    @torch.no_grad()
    def after_update(self) -> None:
        together: dict[float, tuple[list, list]] = {}  # one lerp per decay: the members that share it
        for k, decay in enumerate(self.decays):
            if decay is not None:
                self.updates[k] += 1
                averages, weights = together.setdefault(warmed_decay(decay, self.updates[k]), ([], []))
                averages += self.averages[k]
                weights += self.weights[k]
        for decay, (averages, weights) in together.items():
            torch._foreach_lerp_(averages, weights, 1 - decay)

    def evaluated(self, positions: list[int]) -> dict[int, dict[str, float]]:
        start = time.perf_counter()
        devs = self.engine.split_losses(self.loop.evaluation, "dev")
        self.loop.count_evaluation(time.perf_counter() - start)
        return {k: {AVERAGE_DEV: devs[k]} for k in positions if self.decays[k] is not None}

    def saved(self, position: int) -> dict:
        if self.decays[position] is None:
            return {}
        weights = self.engine.weights(position, self.models[position])
        return {AVERAGE: {"weights": weights, "updates": self.updates[position]}}

    def keep(self, positions: list[int]) -> None:
        self.engine.keep(positions)
        self.models, self.decays, self.updates = (
            [items[k] for k in positions] for items in (self.models, self.decays, self.updates)
        )
        self.pairs()
