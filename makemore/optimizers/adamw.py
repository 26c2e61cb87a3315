"""AdamW (`optim=adamw`, the default), by torch's fused AdamW kernel."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from makemore.fields import NON_NEGATIVE, POSITIVE_NUMBER, Range, ranged
from makemore.optimizers.family import Optimizer, register

BETAS = Range(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9,0.99]")


@dataclass
class AdamWConfig:
    """AdamW, fused."""

    name: str
    lr: float = ranged(POSITIVE_NUMBER, 0.01)
    betas: list[float] = ranged(BETAS, [0.9, 0.99])
    weight_decay: float = ranged(NON_NEGATIVE, 0.01)  # weights and embeddings only


@register("adamw", schedule="cosine")
class AdamW(Optimizer):
    Config = AdamWConfig
    counts = True  # its bias correction reads each parameter's step count

    @staticmethod
    def build(groups: list[dict], cfg) -> torch.optim.Optimizer:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)

    @staticmethod
    def state_of(group: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    @staticmethod
    def shares(group: dict) -> tuple:
        return (*group["betas"], group["eps"], group["weight_decay"])

    @staticmethod
    def update(tensors: dict[str, list[torch.Tensor]], lr: float, group: dict, first: bool) -> None:
        """The call torch.optim.AdamW(fused=True).step makes, the step counts already advanced."""
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(
            tensors["param"],
            tensors["grad"],
            tensors["exp_avg"],
            tensors["exp_avg_sq"],
            [],
            tensors["step"],
            amsgrad=False,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )
