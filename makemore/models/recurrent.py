"""makemore.py's recurrent models: the vanilla RNN and the GRU, a learned start state and one cell step per token."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from makemore.fields import PositiveInt, one_of
from makemore.models.causal import CausalOverItems
from makemore.models.registry import register


class RNNCell(nn.Module):
    """makemore.py's vanilla cell: h' = tanh(W [x, h] + b)."""

    def __init__(self, n_embd: int, n_embd2: int):
        super().__init__()
        self.xh_to_h = nn.Linear(n_embd + n_embd2, n_embd2)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.xh_to_h(torch.cat([x, h], 1)))


class GRUCell(nn.Module):
    """makemore.py's GRU cell: an update gate z and a reset gate r around a tanh candidate."""

    def __init__(self, n_embd: int, n_embd2: int):
        super().__init__()
        self.xh_to_z = nn.Linear(n_embd + n_embd2, n_embd2)
        self.xh_to_r = nn.Linear(n_embd + n_embd2, n_embd2)
        self.xh_to_hbar = nn.Linear(n_embd + n_embd2, n_embd2)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xh = torch.cat([x, h], 1)
        r = torch.sigmoid(self.xh_to_r(xh))
        hbar = torch.tanh(self.xh_to_hbar(torch.cat([x, r * h], 1)))
        z = torch.sigmoid(self.xh_to_z(xh))
        return (1 - z) * h + z * hbar


@register("gru", budget_steps=4500, cell="gru")
@register("rnn", budget_steps=12000)
class RNN(CausalOverItems):
    """makemore.py's recurrent model: a learned start state, then one cell step per token."""

    def __init__(
        self,
        vocab_size: int,
        block_size: PositiveInt = 16,  # the longest name and its end: the whole prefix is the context
        n_embd: PositiveInt = 64,
        n_embd2: PositiveInt = 64,
        cell: Annotated[str, one_of("rnn", "gru")] = "rnn",
    ):
        super().__init__()
        self.block_size = block_size
        self.start = nn.Parameter(torch.zeros(1, n_embd2))
        self.embedding = nn.Embedding(vocab_size, n_embd)
        self.cell = {"rnn": RNNCell, "gru": GRUCell}[cell](n_embd, n_embd2)
        self.output = nn.Linear(n_embd2, vocab_size)

    def forward_items(self, tokens: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(tokens)
        h = self.start.expand(tokens.shape[0], -1)
        states = []
        for t in range(tokens.shape[1]):
            h = self.cell(emb[:, t], h)
            states.append(h)
        return self.output(torch.stack(states, 1))
