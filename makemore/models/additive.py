"""The additive model: cat(one_hot(c1), ..., one_hot(cn)) @ W, a (n V) x V weight matrix (54 x 27 for two
characters)."""

from __future__ import annotations

import torch
from torch import nn

from makemore.fields import PositiveInt
from makemore.models.registry import register


@register("additive", budget_steps=75000)
class Additive(nn.Module):
    """cat(one_hot(c1), ..., one_hot(cn)) @ W, computed as a sum of W's rows: one-hots are never built."""

    def __init__(self, vocab_size: int, block_size: PositiveInt = 2):
        super().__init__()
        self.W = nn.Parameter(torch.randn(block_size * vocab_size, vocab_size))
        self.register_buffer("offsets", torch.arange(block_size) * vocab_size, persistent=False)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.W[context + self.offsets].sum(1)
