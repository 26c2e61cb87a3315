"""The final metrics: the numbers a finished run reports beside its hyperparameters, each defined once.

metrics.json holds them by key; the loggers' summaries (TensorBoard's HParams, W&B's summary, MLflow's metrics)
and the dashboard's HParams columns name them by tag, in the order a user ranks by: TensorBoard ticks the first
five (dev against the target, then what it cost); test stays unticked, as the split nobody chooses by. The
leaderboards (makemore.report) show those with a column, in their column's order. A new
final metric is its line here (its tag, its leaderboard column) and its value in makemore.train.final_metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FinalMetric:
    """One number a finished run reports."""

    key: str  # its key in metrics.json
    tag: str | None  # its name beside the HParams: a scalar of the `loss/` or the `run/` chart group; None: not there
    column: str | None = None  # its leaderboard column ({target}: the run's target); None: not on the leaderboard
    column_at: int = 0  # the column's place among the leaderboard's metric columns: size and length, then losses
    kind: str = "number"  # how a cell writes it: number, loss (4 decimals), seconds (1 decimal), flag (✓ or ✗)


FINAL_METRICS = (
    FinalMetric("dev_loss", "loss/dev", "dev", 3, "loss"),
    FinalMetric("train_loss", "loss/train", "train", 2, "loss"),
    FinalMetric("params", "run/params", "params", 0),
    FinalMetric("train_seconds", "run/train_seconds", "seconds", 5, "seconds"),
    FinalMetric("target_met", "run/target_met", "dev<{target}", 6, "flag"),
    FinalMetric("test_loss", "loss/test", "test", 4, "loss"),
    FinalMetric("best_dev_loss", "run/best_dev_loss"),
    FinalMetric("step_to_target", "run/step_to_target"),
    FinalMetric("steps", None, "steps", 1),
)

# The leaderboard's metric columns, in their order.
LEADERBOARD_METRICS = tuple(sorted((m for m in FINAL_METRICS if m.column), key=lambda m: m.column_at))


def final_summary(metrics: dict) -> dict[str, float]:
    """A run's final metrics by tag, from its metrics.json: a null loss (infinite: JSON has none) as inf, a flag as
    1.0 or 0.0; a metric the run lacks (step_to_target where dev never beat the target) left out."""
    summary = {}
    for metric in FINAL_METRICS:
        if metric.tag and metric.key in metrics:
            value = metrics[metric.key]
            summary[metric.tag] = math.inf if value is None else float(value) if isinstance(value, bool) else value
    return summary


def leaderboard_cells(metrics: dict, target: object) -> dict[str, object]:
    """A run's leaderboard cells, by column (the target column named after `target`): a failed run's losses and
    seconds blank and its verdict ✗; a null loss is infinite; a finished run without a target has no verdict."""
    ok = metrics.get("status") == "ok"
    cells = {}
    for metric in LEADERBOARD_METRICS:
        value = metrics.get(metric.key)
        if metric.kind == "number":
            cell = metrics.get(metric.key, "")
        elif metric.kind == "flag":
            cell = "" if metrics.get("target") is None and ok else "✓" if value else "✗"
        elif not ok:
            cell = ""
        elif metric.kind == "loss":
            cell = f"{value:.4f}" if isinstance(value, (int, float)) else "inf"
        else:
            cell = f"{value:.1f}"
        cells[metric.column.format(target=target)] = cell
    return cells
