"""Figures for the dashboard and reports: embeddings, n-gram heatmaps, loss curves."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from makemore.data import Vocab
from makemore.models import Additive, NgramCounts, NgramTable
from makemore.search import Pareto

TICK_SIZE = 9  # points: readable on a TensorBoard image card (~500 px wide)


@contextmanager
def missing_glyphs() -> Iterator[set[str]]:
    """The characters matplotlib's font cannot draw (CJK, emoji, tabs become boxes), collected into the set it
    yields instead of one warning per glyph and figure; other warnings pass on."""
    missing: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield missing
    for warning in caught:
        found = re.match(r"Glyph (\d+) .*missing from", str(warning.message))
        if found:
            missing.add(chr(int(found.group(1))))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def subplots(nrows: int = 1, ncols: int = 1, **options) -> tuple[Figure, Axes | np.ndarray]:
    """A figure and its axes as pyplot.subplots makes them, without pyplot: files only, no display, and ~0.3 s less
    to import in every process that draws (a run's pictures, a population's workers, a sweep's leaderboard)."""
    figure = Figure(figsize=options.pop("figsize", None))
    FigureCanvasAgg(figure)  # drawn by Agg, as pyplot's figures are on a machine without a display
    return figure, figure.subplots(nrows, ncols, **options)


def save(figure: Figure, path: Path) -> None:
    """Write a report's figure to a PNG."""
    figure.savefig(path, dpi=110, bbox_inches="tight")


def token_embedding(model: nn.Module, vocab_size: int) -> nn.Embedding | None:
    """The model's character embedding: its first nn.Embedding with one row per token (not the positions')."""
    return next((m for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == vocab_size), None)


def embedding_scatter(embedding: nn.Embedding, vocab: Vocab):
    """Lecture 2's picture: each character at its embedding (first two PCA components when it has more)."""
    points = embedding.weight.detach().float().cpu()
    if points.shape[1] > 2:
        centred = points - points.mean(0)
        points = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
    elif points.shape[1] == 1:
        points = torch.cat([points, torch.zeros_like(points)], 1)
    figure, axes = subplots(figsize=(5, 5))
    axes.scatter(points[:, 0], points[:, 1], s=260, color="tab:blue")
    for (x, y), char in zip(points.tolist(), vocab.chars):
        axes.text(x, y, char, ha="center", va="center", color="white", fontsize=11, fontweight="bold")
    axes.set_title("character embeddings" + (" (PCA)" if embedding.weight.shape[1] > 2 else ""))
    axes.grid(alpha=0.3)
    return figure


def next_token_heatmap(model: nn.Module, vocab: Vocab):
    """P(next | context) for count and table models, over the contexts that start an item: the boundary then
    one character (for a bigram model, every context there is)."""
    block_size = model.block_size
    context = torch.zeros(vocab.size, block_size, dtype=torch.long)
    context[:, -1] = torch.arange(vocab.size)
    with torch.no_grad():
        probs = model(context).softmax(1).cpu().numpy()
    figure, axes = subplots(figsize=(7, 7))
    axes.imshow(probs, cmap="Blues")
    axes.set_xticks(range(vocab.size), vocab.chars, fontsize=TICK_SIZE)
    axes.set_yticks(range(vocab.size), [vocab.boundary * (block_size - 1) + c for c in vocab.chars], fontsize=TICK_SIZE)
    axes.set_xlabel("next")
    axes.set_ylabel("context")
    shown = (
        "every context"
        if block_size == 1
        else f"the {vocab.size} contexts '{vocab.boundary * (block_size - 1)}x' that start an item"
    )
    axes.set_title(f"P(next | context), {shown}", fontsize=10)
    return figure


def additive_weights(model: Additive, vocab: Vocab):
    """The additive model's weight matrix, one V x V block per context position: row c of block p is what
    character c at position p adds to the next character's logits."""
    block_size = model.W.shape[0] // vocab.size
    blocks = model.W.detach().float().cpu().view(block_size, vocab.size, vocab.size)
    figure, panels = subplots(1, block_size, figsize=(6 * block_size, 6.4), squeeze=False)
    limit = blocks.abs().max().item()
    for position, axes in enumerate(panels[0]):
        image = axes.imshow(blocks[position].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes.set_xticks(range(vocab.size), vocab.chars, fontsize=TICK_SIZE)
        axes.set_yticks(range(vocab.size), vocab.chars, fontsize=TICK_SIZE)
        axes.set_xlabel("next")
        axes.set_ylabel(f"character {block_size - position} back")
        axes.set_title(f"W, position {position + 1} of {block_size}", fontsize=10)
    figure.colorbar(image, ax=panels[0].tolist(), shrink=0.8, label="logit added")
    return figure


def model_figures(model: nn.Module, vocab: Vocab) -> dict:
    """The picture that explains this kind of model, keyed by its dashboard tag (under `model/`, which sorts after
    `loss/`: TensorBoard's Time Series opens on the loss curves, the pictures below them)."""
    if isinstance(model, (NgramCounts, NgramTable)):
        return {"model/next_token": next_token_heatmap(model, vocab)}
    if isinstance(model, Additive):
        return {"model/weights": additive_weights(model, vocab)}
    embedding = token_embedding(
        model, vocab.size
    )  # the MLP, WaveNet, RNN, GRU, transformer, and a user's model that has one
    return {"model/embeddings": embedding_scatter(embedding, vocab)} if embedding is not None else {}


def model_images(model: nn.Module, vocab: Vocab) -> tuple[dict[str, np.ndarray], set[str]]:
    """model_figures rendered as TensorBoard renders a figure (RGB, height x width x 3), and the characters they
    could not draw (makemore.pictures says so)."""
    images = {}
    with missing_glyphs() as missing:
        for tag, figure in model_figures(model, vocab).items():
            figure.canvas.draw()
            images[tag] = np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    return images, missing


def leaderboard_figure(
    curves: dict[str, list[tuple[int, float]]],
    costs: dict[str, tuple[float, float]],
    target: float | None,
    bands: dict[str, tuple[list, list, list]] | None = None,
    pareto: Pareto | None = None,
):
    """Left: dev loss against step for the best runs (a run with no steps is a level line), or for seed groups
    their mean curve in a band of one standard deviation. Right: every finished run's (or group's mean) final
    dev loss against its training seconds, the price of each result; for a multi-objective search, its trials
    on two of its objectives with the Pareto front drawn through them."""
    figure, (axes, cost_axes) = subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    for i, (name, (steps, mean, std)) in enumerate((bands or {}).items()):
        axes.plot(steps, mean, marker=".", label=f"{name} (mean of seeds)", color=f"C{i % 10}")
        axes.fill_between(
            steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=f"C{i % 10}", alpha=0.2
        )
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
    if axes.get_legend_handles_labels()[0]:  # no finished run: nothing to name
        axes.legend(fontsize=7)
    if pareto:
        pareto_panel(cost_axes, pareto, target)
    else:
        cost_panel(cost_axes, costs, target)
    return figure


def cost_panel(axes, costs: dict[str, tuple[float, float]], target: float | None) -> None:
    """Each result's final dev loss against its training seconds, on a log axis, each point named."""
    points = {name: (max(seconds, 1e-3), dev) for name, (seconds, dev) in costs.items()}
    for seconds, dev in points.values():
        axes.scatter(seconds, dev, color="C0")
    if target is not None:
        axes.axhline(target, color="black", linewidth=1)
    axes.set_xscale("log")
    if points:
        log_axis_ticks(axes, [seconds for seconds, _ in points.values()])
        label_points(axes, points)
    axes.set_xlabel("training seconds (one core)")
    axes.set_ylabel("final dev loss")
    axes.set_title("dev loss against training time")
    axes.grid(alpha=0.3, which="both")


def pareto_panel(axes, pareto: Pareto, target: float | None) -> None:
    """A multi-objective search's trials on its two axes, the front as a staircase through its trials (each
    named): below and left of it, no trial; above and right, the trials it beats."""
    x_positive = all(x > 0 for x, _ in pareto.points.values())
    beaten = [point for name, point in pareto.points.items() if name not in pareto.front]
    if beaten:
        axes.scatter(*zip(*beaten), color="0.6", s=14, label="other trials (each beaten by a front trial)")
    front = sorted(point for name, point in pareto.points.items() if name in pareto.front)
    axes.step(*zip(*front), where="post", color="C3", linewidth=1)
    axes.scatter(*zip(*front), color="C3", s=24, zorder=3, label=f"Pareto front ({len(front)} trials)")
    if target is not None and pareto.y == "dev_loss":
        axes.axhline(target, color="black", linewidth=1)
    if x_positive:
        axes.set_xscale("log")
        log_axis_ticks(axes, [x for x, _ in pareto.points.values()])
    label_points(axes, {name: point for name, point in pareto.points.items() if name in pareto.front})
    axes.set_xlabel(pareto.x)
    axes.set_ylabel(pareto.y)
    axes.set_title(f"{pareto.y} against {pareto.x}: the search's Pareto front")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7)


def log_axis_ticks(axes, seconds: list[float]) -> None:
    """Readable ticks on a log axis for any range: five round values spread over it (a range inside one decade
    gets no decade tick at all from matplotlib's default), labelled plainly."""
    low, high = min(seconds), max(seconds)
    low, high = (low / 1.5, high * 1.5) if high / low < 1.5 else (low, high)
    axes.set_xlim(low / 1.2, high * 1.2)
    ticks = sorted({float(f"{value:.2g}") for value in np.geomspace(low, high, 5)})
    axes.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    axes.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes.xaxis.set_minor_locator(ticker.NullLocator())


def label_points(axes, points: dict[str, tuple[float, float]], gap_points: float = 9.0) -> None:
    """Name each point beside it; labels that would overlap (close points) are moved up, in order of their
    height, until each is `gap_points` above the one below it, with a line back to its point."""
    axes.autoscale_view()
    figure = axes.figure
    to_points = 72.0 / figure.dpi
    placed: list[tuple[float, float]] = []  # (x, y) of the labels placed so far, in points
    for name, (x, y) in sorted(points.items(), key=lambda item: item[1][1]):
        px, py = (value * to_points for value in axes.transData.transform((x, y)))
        label_y = py
        for other_x, other_y in sorted(placed, key=lambda placed_label: placed_label[1]):
            if abs(other_x - px) < 120 and abs(label_y - other_y) < gap_points:
                label_y = other_y + gap_points
        placed.append((px, label_y))
        moved = label_y - py > 1
        axes.annotate(
            name,
            (x, y),
            fontsize=7,
            xytext=(4, 2 + label_y - py),
            textcoords="offset points",
            arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5} if moved else None,
        )


def lr_finder(lrs: list[float], losses: list[float], suggested: float):
    """Lecture 2's learning-rate finder: loss against log10(lr), with the suggested lr marked."""
    figure, axes = subplots(figsize=(8, 5))
    axes.plot([math.log10(lr) for lr in lrs], losses)
    axes.axvline(math.log10(suggested), color="tab:red", linestyle="--", label=f"suggested lr {suggested:.3g}")
    axes.set_xlabel("log10(lr)")
    axes.set_ylabel("train loss")
    axes.set_title("learning-rate finder")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure
