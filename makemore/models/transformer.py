"""makemore.py's decoder-only transformer (after GPT-2): causal self-attention, learned positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from makemore.errors import MakemoreError
from makemore.fields import Fraction, PositiveInt
from makemore.models.causal import CausalOverItems
from makemore.models.registry import register


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


@register("transformer", budget_steps=1500)
class Transformer(CausalOverItems):
    """makemore.py's decoder-only transformer (after GPT-2): token and learned position embeddings, n_layer
    blocks of causal self-attention, a final LayerNorm, a linear head at every position."""

    def __init__(
        self,
        vocab_size: int,
        block_size: PositiveInt = 16,
        n_layer: PositiveInt = 4,
        n_head: PositiveInt = 4,
        n_embd: PositiveInt = 64,
        dropout: Fraction = 0.0,
    ):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(n_embd, n_head, dropout) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.register_buffer("positions", torch.arange(block_size), persistent=False)

    @staticmethod
    def check_options(options: dict) -> None:
        """Refuse an embedding the heads cannot split."""
        if options["n_embd"] % options["n_head"]:
            raise MakemoreError(
                f"model.n_embd={options['n_embd']} is not allowed with model.n_head={options['n_head']}: "
                "the heads split the embedding, so n_embd must be a multiple of n_head"
            )

    def forward_items(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.wte(tokens) + self.wpe(self.positions[: tokens.shape[1]])
        return self.lm_head(self.ln_f(self.blocks(self.embedding_dropout(x))))
