"""Train one makemore model: `python train.py model=mlp model.emb=10`. Configs live in conf/ beside this file."""

from pathlib import Path

from makemore.entrypoints import train

if __name__ == "__main__":
    train(Path(__file__).resolve().parent / "conf")
