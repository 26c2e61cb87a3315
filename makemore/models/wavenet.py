"""Lecture 5's WaveNet: pairs of positions merged level by level (Linear, BatchNorm, tanh)."""

from __future__ import annotations

import math

import torch
from torch import nn

from makemore.errors import MakemoreError
from makemore.fields import PositiveInt
from makemore.models.registry import register


class FlattenConsecutive(nn.Module):
    """Lecture 5: [B, T, C] -> [B, T / n, C * n], merging n consecutive positions."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.reshape(B, T // self.n, C * self.n)


class BatchNormOverPositions(nn.BatchNorm1d):
    """BatchNorm1d over the batch and every position of a [B, T, C] input, as lecture 5's BatchNorm1d does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


@register("wavenet", budget_steps=20000, budget_optim="sgd")
class WaveNet(nn.Module):
    """Lecture 5's hierarchical model (after van den Oord et al. 2016): embed, then merge pairs of consecutive
    positions level by level (Linear without bias, BatchNorm, tanh) until one remains, then the output layer.
    At block_size 8, n_embd 24, n_hidden 128: 76,579 parameters."""

    def __init__(
        self,
        vocab_size: int,
        block_size: PositiveInt = 8,  # a power of two: one merge level per halving
        n_embd: PositiveInt = 24,
        n_hidden: PositiveInt = 128,
    ):
        super().__init__()
        levels = int(math.log2(block_size))
        self.embedding = nn.Embedding(vocab_size, n_embd)
        layers: list[nn.Module] = []
        width = n_embd
        for _ in range(levels):
            layers += [
                FlattenConsecutive(2),
                nn.Linear(width * 2, n_hidden, bias=False),
                BatchNormOverPositions(n_hidden),
                nn.Tanh(),
            ]
            width = n_hidden
        self.levels = nn.Sequential(*layers)
        self.output = nn.Linear(width, vocab_size)
        with torch.no_grad():  # lecture 5's init: weights ~ N(0, 1/fan_in), a small output layer
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    layer.weight.normal_(0, layer.in_features**-0.5)
            self.embedding.weight.normal_()
            self.output.weight.mul_(0.1)
            self.output.bias.zero_()

    @staticmethod
    def check_options(options: dict) -> None:
        """Refuse a block_size that is not a power of two."""
        if options["block_size"] & (options["block_size"] - 1):
            raise MakemoreError(
                f"model.block_size={options['block_size']} is not allowed for wavenet: it merges pairs of "
                "positions level by level, so block_size must be a power of two (2, 4, 8, 16...)"
            )

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.output(self.levels(self.embedding(context)).squeeze(1))
