"""n-gram counts with additive smoothing (lecture 1): bigram_count and trigram_count."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from makemore.fields import NON_NEGATIVE, PositiveInt
from makemore.models.registry import register
from makemore.models.tables import check_table_size, context_index


@register("trigram_count", budget_steps=None, block_size=2, alpha=0.1)  # +0.1 smoothing: about 2.22 dev
@register("bigram_count", budget_steps=None, block_size=1)
class NgramCounts(nn.Module):
    """n-gram counts with additive smoothing alpha: trained by counting, not by gradient descent."""

    trained_by_counting = True

    def __init__(self, vocab_size: int, block_size: PositiveInt, alpha: Annotated[float, NON_NEGATIVE] = 1.0):
        super().__init__()
        check_table_size("count table", vocab_size, block_size)
        self.vocab_size, self.block_size, self.alpha = vocab_size, block_size, alpha
        self.register_buffer("counts", torch.zeros(vocab_size**block_size, vocab_size))

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Count every (context, next) pair of the training split."""
        flat = context_index(X, self.vocab_size) * self.vocab_size + Y
        self.counts.copy_(torch.bincount(flat, minlength=self.counts.numel()).view_as(self.counts))

    def probabilities(self) -> torch.Tensor:
        smoothed = self.counts + self.alpha
        totals = smoothed.sum(1, keepdim=True)
        # A context never seen with alpha = 0 has no distribution at all; predict uniformly there.
        return torch.where(totals > 0, smoothed / totals.clamp_min(1e-30), 1.0 / self.vocab_size)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.probabilities()[context_index(context, self.vocab_size)].log()  # -inf for unseen pairs at alpha 0
