"""Models causal over a whole item (the RNN, GRU and transformer), seen through windows like every other model.

Every model maps a context [B, block_size] of token ids (left-padded with the boundary token) to the logits
[B, V] of the next token, so all report the same quantity (mean cross-entropy per next character over the same
examples) and stand on one leaderboard. A causal model's `forward_items` predicts every position of
[boundary, c1..cn] at once, and a window's prediction is that of the item's own prefix (the left padding
dropped), so training and evaluating on whole items gives each example exactly the window's prediction, with
~8x fewer forward passes.
"""

from __future__ import annotations

import torch
from torch import nn


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
