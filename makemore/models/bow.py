"""makemore.py's bag of words: each position adds the mean of every embedding up to it, then an MLP."""

from __future__ import annotations

import torch
from torch import nn

from makemore.fields import PositiveInt
from makemore.models.causal import CausalOverItems
from makemore.models.registry import register


@register("bow", budget_steps=20000)
class BoW(CausalOverItems):
    """makemore.py's BoW: token and learned position embeddings; x + the causal mean of x (attention with equal
    weights over the prefix, computed as a running sum); x + c_proj(tanh(c_fc(x))); a linear head at every
    position. At block_size 16, n_embd 64, n_embd2 64: 12,827 parameters."""

    def __init__(
        self,
        vocab_size: int,
        block_size: PositiveInt = 16,  # the longest name and its end: the whole prefix is the context
        n_embd: PositiveInt = 64,
        n_embd2: PositiveInt = 64,
    ):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.c_fc, self.c_proj = nn.Linear(n_embd, n_embd2), nn.Linear(n_embd2, n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)
        self.register_buffer("positions", torch.arange(block_size), persistent=False)

    def forward_items(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = self.positions[: tokens.shape[1]]
        x = self.wte(tokens) + self.wpe(positions)
        x = x + x.cumsum(1) / (positions + 1).unsqueeze(1)  # position t: the mean of positions 0..t
        x = x + self.c_proj(torch.tanh(self.c_fc(x)))
        return self.lm_head(x)
