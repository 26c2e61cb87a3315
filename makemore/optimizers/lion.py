"""Lion (`optim=lion`; Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): each step moves every
weight by lr in the direction of the sign of an interpolation between its momentum and its gradient, with
decoupled weight decay; the momentum then follows the gradient at a slower rate:

    c = beta1 * m + (1 - beta1) * g;   p -= lr * (sign(c) + weight_decay * p);   m = beta2 * m + (1 - beta2) * g

The sign makes every update the same size, so Lion wants a smaller lr than AdamW (the paper: 3-10x) and a larger
weight decay (its decay is scaled by that lr).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from makemore.fields import NON_NEGATIVE, POSITIVE_NUMBER, ranged
from makemore.optimizers.adamw import BETAS
from makemore.optimizers.family import Optimizer, register, solo_step


@dataclass
class LionConfig:
    """Lion: the sign of an interpolated momentum, decoupled weight decay."""

    name: str
    lr: float = ranged(POSITIVE_NUMBER, 0.004)  # on the default MLP (3,000 steps): 0.003-0.004 best of 0.001-0.01
    betas: list[float] = ranged(BETAS, [0.9, 0.99])  # the interpolation's (beta1) and the momentum's (beta2)
    weight_decay: float = ranged(NON_NEGATIVE, 0.03)  # weights and embeddings only; 0.01-0.03 best of 0.01-0.3


class TorchLion(torch.optim.Optimizer):
    """Lion as a torch.optim optimizer: a run's param groups and state (exp_avg per parameter) in torch.optim's
    state_dict format, stepped by Lion.update."""

    def __init__(self, params, lr: float, betas: tuple[float, float], weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    def step(self, closure=None):
        solo_step(self, Lion)()


@register("lion", schedule="cosine")
class Lion(Optimizer):
    Config = LionConfig

    @staticmethod
    def build(groups: list[dict], cfg) -> torch.optim.Optimizer:
        return TorchLion(groups, lr=cfg.lr, betas=tuple(cfg.betas))

    @staticmethod
    def state_of(group: dict) -> tuple[str, ...]:
        return ("exp_avg",)

    @staticmethod
    def shares(group: dict) -> tuple:
        return (*group["betas"], group["weight_decay"])

    @staticmethod
    def update(tensors: dict[str, list[torch.Tensor]], lr: float, group: dict, first: bool) -> None:
        params, grads, momentum = tensors["param"], tensors["grad"], tensors["exp_avg"]
        beta1, beta2 = group["betas"]
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        direction = torch._foreach_lerp(momentum, grads, 1 - beta1)
        torch._foreach_sign_(direction)
        torch._foreach_add_(params, direction, alpha=-lr)
        torch._foreach_lerp_(momentum, grads, 1 - beta2)
