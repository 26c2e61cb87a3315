"""Stochastic gradient descent (`optim=sgd`, the lectures'; `optim=full_batch`, the seed's descent on the whole
split): p -= lr * grad, with optional momentum and weight decay, by torch's fused SGD kernel."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from makemore.fields import FRACTION, NON_NEGATIVE, POSITIVE_NUMBER, ranged
from makemore.optimizers.family import Optimizer, register


@dataclass
class SGDConfig:
    """Stochastic gradient descent: p -= lr * grad, with optional momentum and weight decay."""

    name: str
    lr: float = ranged(POSITIVE_NUMBER)  # no default: sgd and full_batch each give their own
    momentum: float = ranged(FRACTION, 0.0)
    weight_decay: float = ranged(NON_NEGATIVE, 0.0)  # weights and embeddings only


def is_plain(group: dict) -> bool:
    """p -= lr * grad, nothing else: no momentum, no weight decay."""
    return group["momentum"] == 0 and group["weight_decay"] == 0


def is_plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """SGD without momentum or weight decay in any group (what lecture 4's fused backward pass can take)."""
    return isinstance(optimizer, torch.optim.SGD) and all(
        is_plain(g) and not g["nesterov"] and not g["maximize"] for g in optimizer.param_groups
    )


# full_batch: the seed's constant lr, 200 steps on the whole split
@register(
    "full_batch",
    schedule="constant",
    run={"batch_size": None, "steps": 200, "eval_interval": 50, "log_interval": 10},
    lr=50.0,
)
@register("sgd", schedule="step", run={"batch_size": 32}, lr=0.1)  # the lectures' step schedule, batch 32
class SGD(Optimizer):
    Config = SGDConfig

    @staticmethod
    def build(groups: list[dict], cfg) -> torch.optim.Optimizer:
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=True)

    @staticmethod
    def state_of(group: dict) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] else ()  # torch keeps a buffer only with momentum

    @staticmethod
    def shares(group: dict) -> tuple:
        return ("plain",) if is_plain(group) else (group["momentum"], group["weight_decay"], group["dampening"])

    @staticmethod
    def takes_whole(group: dict) -> bool:
        return is_plain(group)  # an add is the same for an element wherever it lies in a tensor

    @staticmethod
    def update(tensors: dict[str, list[torch.Tensor]], lr: float, group: dict, first: bool) -> None:
        if is_plain(group):  # one foreach add: what the fused kernel does here, with less overhead
            torch._foreach_add_(tensors["param"], tensors["grad"], alpha=-lr)
            return
        momentum = group["momentum"]
        torch._fused_sgd_(
            tensors["param"],
            tensors["grad"],
            tensors["momentum_buffer"] if momentum else [],
            weight_decay=group["weight_decay"],
            momentum=momentum,
            lr=lr,
            dampening=group["dampening"],
            nesterov=False,
            maximize=False,
            is_first_step=first and bool(momentum),  # the buffers are filled with the gradients, not updated
            grad_scale=None,
            found_inf=None,
        )
