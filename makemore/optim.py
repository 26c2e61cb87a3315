"""Optimizers and learning-rate schedules, built from the `optim` and `schedule` config groups."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weights and embeddings, not biases or norm gains (Bengio et al. 2003 decay weights only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not weight_decay:  # one group: each group costs a kernel launch per step
        return [{"params": params, "weight_decay": 0.0}]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


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


def is_plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """SGD without momentum or weight decay: p -= lr * grad, nothing else."""
    return isinstance(optimizer, torch.optim.SGD) and all(
        g["momentum"] == 0 and g["weight_decay"] == 0 and not g["nesterov"] and not g["maximize"]
        for g in optimizer.param_groups
    )


def plain_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """optimizer.step, or for plain gradient descent (SGD without momentum or decay) one foreach update per group.

    torch.optim's step costs ~50 us of Python per call, as much as a small model's whole update: the lectures'
    SGD runs ~20% faster without it. The optimizer keeps its param groups, lr and state_dict as before.
    """
    if not is_plain_sgd(optimizer):
        return optimizer.step

    @torch.no_grad()
    def step() -> None:
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            torch._foreach_add_(params, [p.grad for p in params], alpha=-group["lr"])

    return step


def build_optimizer(
    model: nn.Module, cfg, schedule, steps: int
) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
    """The optimizer of the `optim` group (fused kernels) and the lr the `schedule` group gives each step.

    The lr is a pure function of the step, so a resumed run needs no scheduler state.
    """
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    else:  # sgd and full_batch
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=True)
    base = float(cfg.lr)
    factor = lr_schedule(schedule, steps, base)
    return optimizer, lambda step: base * factor(step)
