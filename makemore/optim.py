"""Optimizers and learning-rate schedules, built from the `optim` config group."""

from __future__ import annotations

import math

import torch
from torch import nn

from makemore.errors import MakemoreError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weights and embeddings, not biases or norm gains (Bengio et al. 2003 decay weights only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not weight_decay:  # one group: each group costs a kernel launch per step
        return [{"params": params, "weight_decay": 0.0}]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def lr_factor(schedule: str, step: int, steps: int, cfg) -> float:
    """Multiplier of the base lr at `step` of `steps`."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":  # the lectures: lr, then lr * gamma after a fraction of the run
        return cfg.gamma if step >= cfg.decay_at * steps else 1.0
    if schedule == "cosine":  # linear warmup, then cosine down to min_factor
        warmup = int(cfg.warmup * steps)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return cfg.min_factor + (1 - cfg.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "exponential":  # lecture 2's lr finder: lr rises from lr to lr_end over the run
        return (cfg.lr_end / cfg.lr) ** (step / max(1, steps - 1))
    raise MakemoreError(f"unknown optim.schedule {schedule!r}; choose constant, step, cosine or exponential")


def build_optimizer(model: nn.Module, cfg, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer named by cfg.name with its schedule; fused kernels, since per-step overhead dominates tiny models."""
    if not cfg.lr > 0:
        raise MakemoreError(f"optim.lr must be positive, got {cfg.lr}")
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name in ("sgd", "full_batch"):
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=True)
    elif cfg.name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    else:
        raise MakemoreError(f"unknown optimizer {cfg.name!r}; choose optim=sgd, full_batch or adamw")
    lr_factor(cfg.schedule, 0, steps, cfg)  # fail on a bad schedule now, not mid-run
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg.schedule, step, steps, cfg))
    return optimizer, scheduler
