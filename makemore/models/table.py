"""The trigram table: a V^n x V logits tensor indexed by the whole context, trained by gradient descent."""

from __future__ import annotations

import torch
from torch import nn

from makemore.fields import PositiveInt
from makemore.models.registry import register
from makemore.models.tables import check_table_size, context_index


@register("trigram_table", budget_steps=1000, budget_optim="full_batch")
class NgramTable(nn.Module):
    """A V^n x V logits table indexed by the whole context, trained by gradient descent (randn init, as in the seed)."""

    def __init__(self, vocab_size: int, block_size: PositiveInt = 2):
        super().__init__()
        check_table_size("logits table", vocab_size, block_size)
        self.vocab_size, self.block_size = vocab_size, block_size
        self.W = nn.Parameter(torch.randn((vocab_size,) * (block_size + 1)))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.W.view(-1, self.vocab_size)[context_index(context, self.vocab_size)]
