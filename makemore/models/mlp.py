"""The Bengio et al. 2003 MLP, with lectures 3 and 4's options: init, BatchNorm or LayerNorm, dropout, and the
hand-derived backward pass."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from makemore.errors import MakemoreError
from makemore.fields import Fraction, PositiveInt, one_of
from makemore.models.registry import register


@register("mlp", budget_steps=30000)
class MLP(nn.Module):
    """Bengio et al. 2003: embed each context token, concatenate, tanh hidden layer(s), softmax output."""

    def __init__(
        self,
        vocab_size: int,
        block_size: PositiveInt = 3,
        emb: PositiveInt = 10,
        hidden: PositiveInt = 200,
        layers: PositiveInt = 1,
        direct: bool = False,  # the paper's direct embedding -> output connections
        init: Annotated[str, one_of("scaled", "randn", "torch")] = "scaled",  # see _initialise
        norm: Annotated[str, one_of("none", "batch", "layer")] = "none",
        dropout: Fraction = 0.0,
        backward: Annotated[str, one_of("autograd", "manual")] = "autograd",  # manual: makemore/backprop.py
    ):
        super().__init__()
        self.manual_backward = backward == "manual"  # trained through makemore/backprop.py's hand-derived pass
        self.embedding = nn.Embedding(vocab_size, emb)
        widths = [block_size * emb] + [hidden] * layers
        blocks: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        for fan_in, fan_out in zip(widths, widths[1:]):
            blocks.append(nn.Linear(fan_in, fan_out, bias=norm != "batch"))  # BatchNorm's shift replaces the bias
            if norm != "none":
                blocks.append(nn.BatchNorm1d(fan_out) if norm == "batch" else nn.LayerNorm(fan_out))
            blocks.append(nn.Tanh())
            if dropout:
                blocks.append(nn.Dropout(dropout))
        self.hidden = nn.Sequential(*blocks)
        self.output = nn.Linear(hidden, vocab_size)
        self.direct = nn.Linear(block_size * emb, vocab_size, bias=False) if direct else None
        self._initialise(init)

    @staticmethod
    def check_options(options: dict) -> None:
        """Refuse what the hand-derived backward pass does not cover."""
        if options["backward"] == "manual" and (options["dropout"] or options["norm"] == "layer"):
            option = f"model.dropout={options['dropout']}" if options["dropout"] else "model.norm=layer"
            raise MakemoreError(
                f"model.backward=manual does not cover {option} (lecture 4 derives tanh layers, "
                "BatchNorm and the embedding); use model.backward=autograd"
            )

    def _initialise(self, init: str) -> None:
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():  # in-place writes to leaf parameters
            if init == "randn":  # lecture 2: every parameter ~ N(0, 1); the initial loss is far above ln V
                for p in self.parameters():
                    p.normal_()
            elif init == "scaled":  # lecture 3: Kaiming gain 5/3 for tanh and a near-zero output: loss starts at ln V
                for layer in linears:
                    nn.init.normal_(layer.weight, std=(5 / 3) / math.sqrt(layer.in_features))
                    if layer.bias is not None:
                        layer.bias.zero_()
                self.output.weight.mul_(0.01)
                if self.direct is not None:
                    self.direct.weight.mul_(0.01)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        x = self.embedding(context).flatten(1)
        logits = self.output(self.hidden(x))
        return logits if self.direct is None else logits + self.direct(x)
