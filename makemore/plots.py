"""Figures for the dashboard and reports: embeddings, n-gram heatmaps, loss curves."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt
import torch
from torch import nn

from makemore.data import Vocab
from makemore.models import MLP, NgramCounts, NgramTable


def embedding_scatter(model: MLP, vocab: Vocab):
    """Lecture 2's picture: each character at its embedding (first two PCA components when emb > 2)."""
    points = model.embedding.weight.detach().float().cpu()
    if points.shape[1] > 2:
        centred = points - points.mean(0)
        points = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
    elif points.shape[1] == 1:
        points = torch.cat([points, torch.zeros_like(points)], 1)
    figure, axes = plt.subplots(figsize=(7, 7))
    axes.scatter(points[:, 0], points[:, 1], s=200, color="tab:blue")
    for (x, y), char in zip(points.tolist(), vocab.chars):
        axes.text(x, y, char, ha="center", va="center", color="white")
    axes.set_title("character embeddings" + (" (PCA)" if model.embedding.weight.shape[1] > 2 else ""))
    axes.grid(alpha=0.3)
    return figure


def next_token_heatmap(model: nn.Module, vocab: Vocab):
    """P(next | previous) for count and table models; for longer contexts the last context token, boundary before."""
    block_size = model.block_size
    context = torch.zeros(vocab.size, block_size, dtype=torch.long)
    context[:, -1] = torch.arange(vocab.size)
    with torch.no_grad():
        probs = model(context).softmax(1).cpu().numpy()
    size = max(6, 0.35 * vocab.size)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(probs, cmap="Blues")
    axes.set_xticks(range(vocab.size), vocab.chars)
    axes.set_yticks(range(vocab.size), [vocab.boundary * (block_size - 1) + c for c in vocab.chars])
    axes.set_xlabel("next")
    axes.set_ylabel("context")
    axes.set_title("P(next | context)")
    return figure


def model_figures(model: nn.Module, vocab: Vocab) -> dict:
    """The picture that explains this kind of model, keyed by its dashboard tag."""
    if isinstance(model, MLP):
        return {"embeddings": embedding_scatter(model, vocab)}
    if isinstance(model, (NgramCounts, NgramTable)):
        return {"next_token": next_token_heatmap(model, vocab)}
    return {}


def dev_curves(curves: dict[str, list[tuple[int, float]]], target: float | None):
    """Dev loss against step for several runs on one plot; a single point is drawn as a level line."""
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for i, (name, points) in enumerate(curves.items()):
        if len(points) > 1:
            axes.plot(*zip(*points), marker=".", label=name, color=f"C{i % 10}")
        elif points:
            axes.axhline(points[0][1], linestyle="--", label=f"{name} (no steps)", color=f"C{i % 10}")
    if target is not None:
        axes.axhline(target, color="black", linewidth=1, label=f"target {target}")
    axes.set_xlabel("step")
    axes.set_ylabel("dev loss")
    axes.set_title("dev loss of the best runs")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return figure


def lr_finder(lrs: list[float], losses: list[float], suggested: float):
    """Lecture 2's learning-rate finder: loss against log10(lr), with the suggested lr marked."""
    figure, axes = plt.subplots(figsize=(8, 5))
    axes.plot([math.log10(lr) for lr in lrs], losses)
    axes.axvline(math.log10(suggested), color="tab:red", linestyle="--", label=f"suggested lr {suggested:.3g}")
    axes.set_xlabel("log10(lr)")
    axes.set_ylabel("train loss")
    axes.set_title("learning-rate finder")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure
