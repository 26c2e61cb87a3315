"""Run a named sweep, `python sweep.py sweep=models`, or rebuild a leaderboard, `python sweep.py report=outputs`."""

import sys

from omegaconf import DictConfig

from makemore import report
from makemore.cli import run_app
from makemore.hydra_versions import hydra_main
from makemore.train import train


@hydra_main(config_path="conf", config_name="sweep")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    reports = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("report=")]
    sys.exit(report.main(reports[-1]) if reports else run_app(main, help_shows="sweep=models"))
