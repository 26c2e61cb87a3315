"""The final metrics: the numbers a finished run reports beside its hyperparameters, each defined once.

metrics.json holds them by key; the loggers' summaries (TensorBoard's HParams, W&B's summary, MLflow's metrics)
and the dashboard's HParams columns name them by tag, in the order a user ranks by: TensorBoard ticks the first
five (dev against the target, then what it cost); test stays unticked, as the split nobody chooses by. A new
final metric is its line here and its value in makemore.train.final_metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FinalMetric:
    """One number a finished run reports."""

    key: str  # its key in metrics.json
    tag: str  # its name beside the HParams: a scalar of the `loss/` or the `run/` chart group, after the curves


FINAL_METRICS = (
    FinalMetric("dev_loss", "loss/dev"),
    FinalMetric("train_loss", "loss/train"),
    FinalMetric("params", "run/params"),
    FinalMetric("train_seconds", "run/train_seconds"),
    FinalMetric("target_met", "run/target_met"),
    FinalMetric("test_loss", "loss/test"),
    FinalMetric("best_dev_loss", "run/best_dev_loss"),
    FinalMetric("step_to_target", "run/step_to_target"),
)


def final_summary(metrics: dict) -> dict[str, float]:
    """A run's final metrics by tag, from its metrics.json: a null loss (infinite: JSON has none) as inf, a flag as
    1.0 or 0.0; a metric the run lacks (step_to_target where dev never beat the target) left out."""
    summary = {}
    for metric in FINAL_METRICS:
        if metric.key in metrics:
            value = metrics[metric.key]
            summary[metric.tag] = math.inf if value is None else float(value) if isinstance(value, bool) else value
    return summary
