"""Models: each maps a context [B, block_size] of token ids to next-token logits [B, V].

One module per family, each class beside its config: a built-in model registers itself as a `model` option
(`@register(...)`, makemore.models.registry), and its constructor's signature gives that option's keys,
defaults and allowed ranges. A new built-in model is one module here and its line below.
"""

# ruff: noqa: I001  (the families in the lectures' order: the order they register, and sweep=models runs them)
from makemore.models.counts import NgramCounts
from makemore.models.table import NgramTable
from makemore.models.additive import Additive
from makemore.models.mlp import MLP
from makemore.models.wavenet import WaveNet
from makemore.models.causal import CausalOverItems
from makemore.models.recurrent import RNN
from makemore.models.bow import BoW
from makemore.models.transformer import Transformer
from makemore.models.build import build_model, why_not_built
from makemore.models.registry import OPTIONS, current_target, registered_class, schema_of, target_of
from makemore.models.scoring import (
    DISTINCT_ROWS,
    EVAL_BYTES,
    distinct_logits,
    distinct_rows,
    eval_rows,
    loss_on,
    predict,
)
from makemore.models.tables import MAX_TABLE_ENTRIES, context_index

__all__ = [
    "DISTINCT_ROWS",
    "EVAL_BYTES",
    "MAX_TABLE_ENTRIES",
    "MLP",
    "OPTIONS",
    "RNN",
    "Additive",
    "BoW",
    "CausalOverItems",
    "NgramCounts",
    "NgramTable",
    "Transformer",
    "WaveNet",
    "build_model",
    "context_index",
    "current_target",
    "distinct_logits",
    "distinct_rows",
    "eval_rows",
    "loss_on",
    "predict",
    "registered_class",
    "schema_of",
    "target_of",
    "why_not_built",
]
