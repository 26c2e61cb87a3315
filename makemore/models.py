"""Models: each maps a context [B, block_size] of token ids to next-token logits [B, V]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from makemore.errors import MakemoreError

# Refuse tables above this many entries: 50M float32 is 200 MB, and an optimizer keeps up to 3 more copies.
MAX_TABLE_ENTRIES = 50_000_000
# Evaluation computes logits a chunk at a time; a chunk's logits stay under this, a 20,000-token vocabulary's too.
EVAL_BYTES = 256 * 2**20


def context_index(context: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Row of a V^n-row table for each context: the context read as a base-V number (Horner's rule)."""
    index = torch.zeros_like(context[:, 0])
    for column in context.unbind(1):
        index = index * vocab_size + column
    return index


def _check_table_size(name: str, vocab_size: int, block_size: int) -> None:
    digits = (block_size + 1) * math.log10(vocab_size)
    if digits > math.log10(MAX_TABLE_ENTRIES):  # compared in logs: V^(n+1) can have thousands of digits
        entries = f"{vocab_size ** (block_size + 1):,}" if digits < 16 else f"{vocab_size}^{block_size + 1}"
        memory = (
            f"about {vocab_size ** (block_size + 1) * 16 / 2**30:,.1f} GiB"
            if digits < 16
            else "more memory than exists"
        )
        raise MakemoreError(  # weights, gradient and two optimizer moments: 16 bytes an entry
            f"{name} with block_size {block_size} over {vocab_size} tokens needs {entries} entries "
            f"({memory} to train), "
            f"above the cap of {MAX_TABLE_ENTRIES:,}; use a smaller block_size"
        )


class NgramCounts(nn.Module):
    """n-gram counts with additive smoothing alpha: trained by counting, not by gradient descent."""

    trained_by_counting = True

    def __init__(self, vocab_size: int, block_size: int, alpha: float = 1.0):
        super().__init__()
        _check_table_size("count table", vocab_size, block_size)
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


class NgramTable(nn.Module):
    """A V^n x V logits table indexed by the whole context, trained by gradient descent (randn init, as in the seed)."""

    def __init__(self, vocab_size: int, block_size: int):
        super().__init__()
        _check_table_size("logits table", vocab_size, block_size)
        self.vocab_size, self.block_size = vocab_size, block_size
        self.W = nn.Parameter(torch.randn((vocab_size,) * (block_size + 1)))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.W.view(-1, self.vocab_size)[context_index(context, self.vocab_size)]


class Additive(nn.Module):
    """cat(one_hot(c1), ..., one_hot(cn)) @ W, computed as a sum of W's rows: one-hots are never built."""

    def __init__(self, vocab_size: int, block_size: int):
        super().__init__()
        self.W = nn.Parameter(torch.randn(block_size * vocab_size, vocab_size))
        self.register_buffer("offsets", torch.arange(block_size) * vocab_size, persistent=False)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.W[context + self.offsets].sum(1)


class MLP(nn.Module):
    """Bengio et al. 2003: embed each context token, concatenate, tanh hidden layer(s), softmax output."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        emb: int = 10,
        hidden: int = 200,
        layers: int = 1,
        direct: bool = False,
        init: str = "scaled",
        norm: str = "none",
        dropout: float = 0.0,
        backward: str = "autograd",
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

    def _initialise(self, init: str) -> None:
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():  # in-place writes to leaf parameters
            if init == "randn":  # lecture 2: every parameter ~ N(0, 1); the initial loss is far above ln V
                for p in self.parameters():
                    p.normal_()
            elif (
                init == "scaled"
            ):  # lecture 3: Kaiming gain 5/3 for tanh and a near-zero output, so loss starts at ln V
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


def target_of(model_class: type) -> str:
    """The `_target_` that names a model class in a config: its import path."""
    return f"{model_class.__module__}.{model_class.__qualname__}"


def build_model(cfg, vocab_size: int) -> nn.Module:
    """The model class named by cfg._target_, built with cfg's options and the data's vocabulary size.

    Any nn.Module whose constructor takes `vocab_size` and whose forward maps [B, block_size] token ids to
    [B, V] logits will do: a user's own class, importable from the PYTHONPATH, plugs in by config alone.
    """
    import importlib

    from omegaconf import DictConfig, OmegaConf

    options = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name, target = options.pop("name", None), options.pop("_target_")
    module, _, class_name = target.rpartition(".")
    try:  # the class a config names is built here, not by Hydra: a user's own model is trusted by design
        model_class = getattr(importlib.import_module(module), class_name)
        return model_class(vocab_size=vocab_size, **options)
    except MakemoreError:
        raise
    except Exception as e:
        raise MakemoreError(f"cannot build model {name} from {target}: {why_not_built(target, e)}") from None


def why_not_built(target: str, error: BaseException) -> str:
    """What stopped a model's class from being found or built, and the fix for that cause."""
    import importlib

    reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    module, _, name = target.rpartition(".")
    try:
        found = importlib.import_module(module) if module else None
    except ImportError as e:
        return f"{type(e).__name__}: {e}; its module must be importable (put its directory on PYTHONPATH)"
    if found is None or not hasattr(found, name):
        return f"module {module or '?'} has no {name!r}; check the spelling of model._target_ (module.Class)"
    return f"its constructor failed ({reason}); check the model's config keys against its __init__ parameters"


def eval_rows(vocab_size: int) -> int:
    """Examples per evaluation chunk: 65,536, or fewer so that a chunk's logits stay within EVAL_BYTES."""
    return max(1, min(65536, EVAL_BYTES // (vocab_size * 4 * 3)))  # logits, their softmax and its gradient


def predict(model: nn.Module, X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, V] and targets [N] of a batch: windows X [N, block_size] with Y [N], or whole items X [M, L]
    with Y [M, L] (every position at once through model.forward_items; -1 targets are padding)."""
    if Y.dim() == 2:
        return model.forward_items(X).flatten(0, 1), Y.flatten()
    return model(X), Y


DISTINCT_ROWS = 16  # fewer rows than this at once may take MKL's few-row kernels, which sum in another order


def loss_on(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, vocab_size: int) -> float:
    """Mean cross-entropy per next token over a whole split, in eval mode, in chunks that bound memory. A split of
    windows holds few distinct contexts (the names' train split at block_size 3: 5,438 of 182,625), so each one's
    logits are computed once and gathered: in eval mode a row's logits do not depend on the rows beside it."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    batch = max(1, eval_rows(vocab_size) // (Y.shape[1] if Y.dim() == 2 else 1))
    with torch.no_grad():
        rows, inverse = distinct_rows(X, vocab_size) if Y.dim() == 1 else (X, None)
        distinct = model(rows) if inverse is not None and DISTINCT_ROWS <= len(rows) <= batch else None
        for start in range(0, len(X), batch):
            if distinct is None:
                logits, targets = predict(model, X[start : start + batch], Y[start : start + batch])
            else:
                logits, targets = distinct.index_select(0, inverse[start : start + batch]), Y[start : start + batch]
            total += F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum").double()
    model.train(was_training)
    return (total / (Y >= 0).sum()).item()


def distinct_rows(x: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.unique(x, dim=0, return_inverse=True) for contexts of token ids: each row read as one number in base
    vocab_size, whose unique values sort as the rows do (~30x faster on the names' train split: 0.03 s, not 0.9)."""
    if vocab_size ** x.shape[1] >= 2**62:  # too long a context to fit a number
        return torch.unique(x, dim=0, return_inverse=True)
    digits = vocab_size ** torch.arange(x.shape[1] - 1, -1, -1, device=x.device)
    keys, inverse = torch.unique((x * digits).sum(1), return_inverse=True)
    positions = torch.arange(len(x), device=x.device)
    first = torch.zeros(len(keys), dtype=torch.long, device=x.device).scatter_(0, inverse, positions)
    return x[first], inverse
