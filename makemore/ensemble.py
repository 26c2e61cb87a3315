"""A seed group's ensemble: its members' next-token probabilities averaged, scored on dev and test as any model is
(mean cross-entropy per next token over the same examples)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from makemore.checkpoint import load_model
from makemore.data import build_items, load_dataset, trains_on_whole_items
from makemore.errors import MakemoreError
from makemore.models import eval_rows, predict
from makemore.rundir import MODEL

SCORED = ("dev", "test")


def ensemble_losses(run_dirs: list[Path]) -> dict[str, float] | None:
    """The loss on dev and test of the runs' averaged probabilities, or None where fewer than two of them left a
    model, or their models were trained on different data or cannot be read."""
    files = tuple((d / MODEL, (d / MODEL).stat().st_mtime_ns) for d in run_dirs if (d / MODEL).is_file())
    return scored(files) if len(files) > 1 else None


@functools.lru_cache(maxsize=64)  # a sweep's end scores its groups for its files and for TensorBoard
def scored(files: tuple[tuple[Path, int], ...]) -> dict[str, float] | None:
    try:
        members = [load_model(path) for path, _ in files]
    except MakemoreError:
        return None
    first, vocab, config = members[0]
    data = config["data"]
    if any(v.chars != vocab.chars or c["data"] != data for _, v, c in members):
        return None
    try:
        dataset = load_dataset(
            data["path"], config["model"]["block_size"], data["boundary"], data["fractions"], data["seed"]
        )
    except MakemoreError:  # the data file is gone or changed: no score
        return None
    losses = {}
    for split in SCORED:
        if trains_on_whole_items(first, dataset):
            X, Y = build_items(dataset.words[split], dataset.vocab)
        else:
            X, Y = dataset.X[split], dataset.Y[split]
        losses[split] = averaged_loss([m for m, _, _ in members], X, Y, vocab.size)
    return losses


@torch.no_grad()
def averaged_loss(models: list[torch.nn.Module], X: torch.Tensor, Y: torch.Tensor, vocab_size: int) -> float:
    """-log of the models' mean probability of each next token, averaged over the tokens."""
    total, rows = 0.0, max(1, eval_rows(vocab_size) // (Y.shape[1] if Y.dim() == 2 else 1))
    for start in range(0, len(X), rows):
        x, y = X[start : start + rows], Y[start : start + rows]
        probability = None
        for model in models:
            logits, targets = predict(model, x, y)
            p = F.softmax(logits.double(), -1)
            probability = p if probability is None else probability + p
        kept = targets >= 0
        total += -(probability[kept].gather(1, targets[kept, None]) / len(models)).log().sum().item()
    count = (Y >= 0).sum().item()
    return total / count if count else math.nan
