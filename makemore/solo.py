"""A run trained alone, as the training loop's population of one (makemore.loop): its engine answers the loop as
a stacked one does (makemore.stacked.StackedEngine), on the model itself: any model through autograd (BatchNorm,
dropout and a model of your own included), or an MLP through lecture 4's hand-derived backward pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from makemore.backprop import ManualBackward
from makemore.errors import MakemoreError
from makemore.models import loss_on, predict
from makemore.optimizers import Optimizer, SoloOptimizer, is_plain_sgd
from makemore.stacked import Evaluation, StackedEngine


class SoloEngine(StackedEngine):
    """One model, member 0 of its own population: its gradients by autograd into each p.grad, its weights and its
    losses its own."""

    member_dim = False  # a step's batch is the model's own: x [B, T]
    size = 1

    def __init__(self, model: nn.Module):
        self.model = model
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        model.train()

    def step(self, x: torch.Tensor, y: torch.Tensor, smoothing: list[float]) -> torch.Tensor:
        logits, targets = predict(self.model, x, y)
        loss = F.cross_entropy(logits, targets, ignore_index=-1, label_smoothing=smoothing[0])
        for p in self.parameters:  # what zero_grad(set_to_none=True) does, at a tenth of its per-step overhead
            p.grad = None
        loss.backward()
        return loss.detach()

    def like(self, models: list[nn.Module]) -> StackedEngine:
        return SoloEngine(models[0])

    def split_losses(self, evaluation: Evaluation, split: str) -> list[float]:
        return [loss_on(self.model, evaluation.X[split], evaluation.Y[split], evaluation.vocab_size)]

    def weights(self, k: int, template: nn.Module) -> dict[str, torch.Tensor]:
        return self.model.state_dict()  # the template is the model itself

    def member_weights(self, k: int) -> list[torch.Tensor]:
        return [t for t in self.model.state_dict().values() if t.is_floating_point()]  # BatchNorm's buffers too

    def member_grads(self, k: int) -> list[torch.Tensor]:
        return [p.grad for p in self.parameters if p.grad is not None]

    def generator_state(self, initial: torch.Tensor) -> torch.Tensor:
        return torch.get_rng_state()  # dropout draws from it

    def keep(self, members: list[int]) -> None:
        """A run alone ends with its one member: nobody is left to keep."""


class ManualEngine(SoloEngine):
    """An MLP with model.backward=manual: lecture 4's hand-derived backward pass instead of autograd's. With plain
    SGD the pass is fused into the update, which FusedSGD runs as the optimizer's step: this step is the forward."""

    def __init__(self, model: nn.Module, rows: int, smoothing: float, fused: bool):
        super().__init__(model)
        self.manual, self.fused = ManualBackward(model, rows, smoothing), fused

    def step(self, x: torch.Tensor, y: torch.Tensor, smoothing: list[float]) -> torch.Tensor:
        if self.fused:
            self.context = x
            return self.manual.forward(x, y)
        return self.manual.gradients(x, y)

    def member_grads(self, k: int) -> list[torch.Tensor]:
        if self.fused:
            raise MakemoreError(
                "model.backward=manual with plain SGD fuses each gradient into its update, so no gradient is ever "
                "held; use model.backward=autograd, or optim.momentum above 0"
            )
        return super().member_grads(k)


class FusedSGD(SoloOptimizer):
    """Plain SGD fused into lecture 4's backward pass: the optimizer's step is that pass, after ManualEngine's
    forward. The torch.optim object keeps the run's groups (no state: plain SGD has none)."""

    def __init__(self, engine: ManualEngine, optimizer: torch.optim.Optimizer, family: type[Optimizer]):
        super().__init__(optimizer, family)
        self.engine = engine

    def step(self, rates: list[tuple[float, tuple[int, ...]]]) -> None:
        self.engine.manual.sgd_backward(self.engine.context, rates[0][0])


def solo(
    model: nn.Module, optimizer: torch.optim.Optimizer, family: type[Optimizer], rows: int, smoothing: float
) -> tuple[SoloEngine, SoloOptimizer | FusedSGD]:
    """The engine and optimizer of a run trained alone: autograd and its family's update, or for an MLP with
    model.backward=manual its hand-derived pass (fused into the update for plain SGD). `rows`: a batch's rows."""
    if not getattr(model, "manual_backward", False):
        return SoloEngine(model), SoloOptimizer(optimizer, family)
    engine = ManualEngine(model, rows, smoothing, fused=is_plain_sgd(optimizer))
    return engine, FusedSGD(engine, optimizer, family) if engine.fused else SoloOptimizer(optimizer, family)
