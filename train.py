"""Train one makemore model: `python train.py model=mlp model.emb=10`. Configs live in conf/."""

import sys

from omegaconf import DictConfig

from makemore.cli import run_app
from makemore.hydra_versions import hydra_main
from makemore.train import train


@hydra_main(config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    sys.exit(run_app(main))
