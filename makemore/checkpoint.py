"""Checkpoints: atomic saves, and loads that refuse foreign or corrupt files in one line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from makemore.config import upgrade
from makemore.data import Vocab
from makemore.errors import CannotWrite, MakemoreError, refused_write
from makemore.models import build_model


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temp file beside `path`, then rename: a kill mid-save never leaves a torn file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; a checkpoint is an ordinary output
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        refused = refused_write(error)
        if refused:
            raise CannotWrite(path, refused) from None
        raise


def load_checkpoint(path: Path, required: set[str] = frozenset()) -> dict:
    """Load with weights_only=True; anything that is not a makemore checkpoint (with `required` keys) is refused."""
    if not path.is_file():
        raise MakemoreError(f"no checkpoint at {path}; point at a run directory that holds model.pt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MakemoreError(
            f"{path} is not a readable checkpoint ({reason[:120]}); rerun training to recreate it"
        ) from None
    if not isinstance(checkpoint, dict) or not {"model", "vocab", "config", *required} <= checkpoint.keys():
        raise MakemoreError(
            f"{path} is not a makemore checkpoint of this kind; point at a run directory made by train.py"
        )
    return checkpoint


def load_model(path: Path) -> tuple[nn.Module, Vocab, dict]:
    """The trained model of a checkpoint, in eval mode, with its vocabulary and resolved config."""
    checkpoint = load_checkpoint(path)
    vocab = Vocab(tuple(checkpoint["vocab"]))
    config = OmegaConf.to_container(upgrade(OmegaConf.create(checkpoint["config"])))
    model = build_model(OmegaConf.create(config["model"]), vocab.size)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        raise MakemoreError(f"{path} does not match its own model config ({str(e).splitlines()[0]})") from None
    return model.eval(), vocab, config
