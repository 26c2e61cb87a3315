"""The commands: `makemore-train` (also `python -m makemore` and a checkout's `python train.py`) trains one run
or a multirun, `makemore-sweep` (`python sweep.py`) runs a named sweep or rebuilds a leaderboard with
`report=<dir>`. `makemore-sample` and `makemore-eval` are makemore.sample's and makemore.evaluate's. Each parses
its config with Hydra and calls the package.

The package is imported inside each command, after one setting of the environment that must come before torch
and numpy load: numpy's BLAS (OpenBLAS) starts no threads of its own. torch does a run's arithmetic, and a process
that runs no other thread may fork its sweep's workers and its pictures (makemore.workers, makemore.pictures)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


def no_blas_threads() -> None:
    """Before torch and numpy are imported; a user's own OPENBLAS_NUM_THREADS stands."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def hydra_app(config_name: str, config_dir: Path | None) -> Callable[[], object]:
    """Hydra's main over `config_name`: from `config_dir` (a checkout's conf/ beside its script) or the package's."""
    from omegaconf import DictConfig

    from makemore.config import CONFIG_PATH
    from makemore.hydra_versions import hydra_main
    from makemore.train import train as train_task

    @hydra_main(config_path=str(config_dir) if config_dir else CONFIG_PATH, config_name=config_name)
    def main(cfg: DictConfig) -> float:
        return train_task(cfg)

    return main


def train(config_dir: Path | None = None) -> NoReturn:
    """`makemore-train [group=option ...] [key=value ...]`: one run (or a multirun with -m, seeds=N, sweep=)."""
    no_blas_threads()
    from makemore.cli import exit_after, run_app

    exit_after(lambda: run_app(hydra_app("train", config_dir)))


def sweep(config_dir: Path | None = None) -> NoReturn:
    """`makemore-sweep sweep=<name> [overrides]`, or `makemore-sweep report=<dir> [eval_data=FILE]`."""
    no_blas_threads()
    from makemore import report
    from makemore.cli import exit_after, run_app

    given = dict(arg.split("=", 1) for arg in sys.argv[1:] if arg.startswith(("report=", "eval_data=")))
    if "report" in given:
        exit_after(lambda: report.main(given["report"], given.get("eval_data")))
    exit_after(lambda: run_app(hydra_app("sweep", config_dir), help_shows="sweep=models"))
