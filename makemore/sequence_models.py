"""The rest of the makemore family: lecture 5's WaveNet, and makemore.py's RNN, GRU and transformer.

Every model here maps a context [B, block_size] of token ids (left-padded with the boundary token) to the
logits [B, V] of the next token, like the n-gram models and the MLP, so all report the same quantity (mean
cross-entropy per next character over the same examples) and stand on one leaderboard. The RNN, GRU and
transformer are causal over a whole item: `forward_items` predicts every position of [boundary, c1..cn] at
once, and a window's prediction is that of the item's own prefix (the left padding dropped), so training and
evaluating on whole items gives each example exactly the window's prediction, ~8x fewer forward passes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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


class WaveNet(nn.Module):
    """Lecture 5's hierarchical model (after van den Oord et al. 2016): embed, then merge pairs of consecutive
    positions level by level (Linear without bias, BatchNorm, tanh) until one remains, then the output layer.
    At block_size 8, n_embd 24, n_hidden 128: 76,579 parameters."""

    def __init__(self, vocab_size: int, block_size: int = 8, n_embd: int = 24, n_hidden: int = 128):
        super().__init__()
        levels = int(math.log2(block_size))  # a power of two: the schema refuses any other block_size
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

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.output(self.levels(self.embedding(context)).squeeze(1))


class CausalOverItems(nn.Module):
    """A model defined by `forward_items(tokens[B, T]) -> logits[B, T, V]`, position t predicting token t + 1
    from tokens 0..t; its window forward runs on the window's prefix, the item as it would be seen whole."""

    def forward_items(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        B, T = context.shape
        # Left padding: a boundary followed by another (the last boundary of a run is the item's start token).
        padding = ((context[:, :-1] == 0) & (context[:, 1:] == 0)).long().cumprod(1).sum(1)
        # Rotate each row left past its padding, so the prefix starts at position 0; causal: the tail is unseen.
        prefix = context.gather(1, (torch.arange(T, device=context.device) + padding[:, None]) % T)
        return self.forward_items(prefix)[torch.arange(B, device=context.device), T - 1 - padding]


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


class RNN(CausalOverItems):
    """makemore.py's recurrent model: a learned start state, then one cell step per token."""

    def __init__(self, vocab_size: int, block_size: int = 16, n_embd: int = 64, n_embd2: int = 64, cell: str = "rnn"):
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


class Block(nn.Module):
    """A pre-norm transformer block: causal self-attention, then an MLP, each around a residual; dropout (as in
    nanoGPT) on the attention weights and on each branch's output."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )
        self.dropout = dropout
        self.attention_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.attention_dropout(self.c_proj(attended.transpose(1, 2).reshape(B, T, C)))
        return x + self.mlp(self.ln_2(x))


class Transformer(CausalOverItems):
    """makemore.py's decoder-only transformer (after GPT-2): token and learned position embeddings, n_layer
    blocks of causal self-attention, a final LayerNorm, a linear head at every position."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 16,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(n_embd, n_head, dropout) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.register_buffer("positions", torch.arange(block_size), persistent=False)

    def forward_items(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.wte(tokens) + self.wpe(self.positions[: tokens.shape[1]])
        return self.lm_head(self.ln_f(self.blocks(self.embedding_dropout(x))))
