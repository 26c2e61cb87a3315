"""Dev loss against wall time for a sweep's runs and their growing ensemble:
`python -m makemore.experiments.ensemble_curve <sweep dir> [--out FILE] [--goal 1.90]`.

The sweep's finished runs in the order they ended; after each, the ensemble (equal weights, makemore.mixture) of
every run ended so far, scored on dev and test. Wall time runs from the sweep's start (its multirun.yaml, which
Hydra writes before any member starts) to each run's end (its metrics.json). A line `dev(K) = a + b/K` fitted to
the ensembles of K = 1, 2, ... runs gives `a`, where more runs of the same recipe lead. Prints the table and the
fit, and draws the runs, the ensembles and the goal into FILE (a PNG).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from makemore.errors import MakemoreError
from makemore.mixture import load_members, mixture_loss
from makemore.rundir import METRICS, MODEL, SWEEP_RECORD, find_runs, finished


def curve(sweep_dir: Path) -> list[dict]:
    """A row per finished run, in the order they ended: its minute, its dev, and the ensemble's dev and test so far."""
    runs = sorted((d for d in find_runs(sweep_dir) if finished(d) and (d / MODEL).is_file()), key=ended_at)
    if len(runs) < 2:
        raise MakemoreError(f"{sweep_dir} holds {len(runs)} finished runs with a model; the curve needs two or more")
    start = (sweep_dir / SWEEP_RECORD).stat().st_mtime
    members = load_members(runs, ("dev", "test"))
    rows = []
    for k in range(1, len(members) + 1):
        weights = torch.full((k,), 1 / k, dtype=torch.float64)
        mixed = {
            s: mixture_loss(torch.stack([m.probabilities[s] for m in members[:k]]), weights) for s in ("dev", "test")
        }
        rows.append(
            {
                "run": members[k - 1].run_dir.name,
                "minutes": (ended_at(runs[k - 1]) - start) / 60,
                "run dev": members[k - 1].metrics["dev_loss"],
                "ensemble dev": mixed["dev"],
                "ensemble test": mixed["test"],
            }
        )
    return rows


def ended_at(run_dir: Path) -> float:
    return (run_dir / METRICS).stat().st_mtime


def fit(rows: list[dict]) -> tuple[float, float]:
    """Least squares of the ensembles' dev against 1/K: (a, b) of dev(K) = a + b/K."""
    x = torch.tensor([1 / k for k in range(1, len(rows) + 1)], dtype=torch.float64)
    y = torch.tensor([row["ensemble dev"] for row in rows], dtype=torch.float64)
    b = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return (y.mean() - b * x.mean()).item(), b.item()


def draw(rows: list[dict], a: float, b: float, goal: float, out: Path) -> None:
    from makemore import plots

    figure, axes = plots.subplots(figsize=(8, 5))
    minutes = [row["minutes"] for row in rows]
    axes.plot(minutes, [row["run dev"] for row in rows], "o", label="each run, at its end")
    axes.plot(minutes, [row["ensemble dev"] for row in rows], "s-", label="ensemble of the runs ended so far")
    axes.axhline(goal, color="C3", linestyle="--", label=f"goal {goal}")
    axes.axhline(a, color="C7", linestyle=":", label=f"fit a + b/K: a = {a:.4f}, b = {b:.4f}")
    axes.axvline(60, color="C2", linestyle="--", label="one hour")
    axes.set_xlabel("wall time since the sweep started (minutes)")
    axes.set_ylabel("dev loss (nats per character)")
    axes.legend()
    plots.save(figure, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m makemore.experiments.ensemble_curve", description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="the PNG (default: <sweep dir>/ensemble_curve.png)")
    parser.add_argument("--goal", type=float, default=1.90)
    args = parser.parse_args(argv)
    try:
        rows = curve(args.sweep_dir)
    except MakemoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    a, b = fit(rows)
    print("| K | run | minutes | run dev | ensemble dev | ensemble test |\n| --- | --- | --- | --- | --- | --- |")
    for k, row in enumerate(rows, 1):
        print(
            f"| {k} | {row['run']} | {row['minutes']:.1f} | {row['run dev']:.4f} | {row['ensemble dev']:.4f} | "
            f"{row['ensemble test']:.4f} |"
        )
    print(f"fit dev(K) = {a:.4f} + {b:.4f}/K: {'crosses' if a < args.goal else 'never reaches'} {args.goal}")
    draw(rows, a, b, args.goal, args.out or args.sweep_dir / "ensemble_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
