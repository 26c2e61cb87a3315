"""The README's GPU table: `python -m makemore.experiments.on_device` trains the default model,
`experiment=karpathy_mlp` and `experiment=best` with `device=auto` (cuda, then mps, then cpu), each as
`python train.py` in its own process, and prints a Markdown row per run: device, training time, steps per second
and the final losses. `--smoke` runs each for 30 steps, to check the script itself."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from makemore.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("", "experiment=karpathy_mlp", "experiment=best")


def device_name() -> str:
    """What device=auto picks here, as the table names it."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "Apple MPS" if torch.backends.mps.is_available() else "CPU, 1 thread"


def train(overrides: str, run_dir: Path, smoke: bool) -> tuple[dict, float]:
    """One `python train.py <overrides> device=auto` in run_dir; its metrics and its wall-clock seconds."""
    extra = ["steps=30", "eval_interval=10", "log_interval=10", "logger=none"] if smoke else []
    command = [sys.executable, "train.py", *overrides.split(), "device=auto", *extra, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return read_metrics(run_dir), time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m makemore.experiments.on_device", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="30 steps each: checks the script, not the figures")
    args = parser.parse_args(argv)
    print(f"device=auto picks {device_name()}; torch {torch.__version__}\n")
    print("| command | train s | steps/s | wall s | train | dev | test |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for number, overrides in enumerate(RUNS):
            metrics, wall = train(overrides, Path(tmp) / str(number), args.smoke)
            print(
                f"| `python train.py {overrides + ' ' if overrides else ''}device=auto` | "
                f"{metrics['train_seconds']:,.1f} | {metrics['steps_per_second']:,.0f} | {wall:,.0f} | "
                f"{metrics['train_loss']:.4f} | {metrics['dev_loss']:.4f} | {metrics['test_loss']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
