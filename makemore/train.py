"""One training run: data -> model -> loop -> loggers -> run directory. `train(cfg)` is Hydra's task function."""

from __future__ import annotations

import csv
import json
import logging
import math
import secrets
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from makemore.checkpoint import load_checkpoint, save_atomic
from makemore.config import compose_train_config, flatten
from makemore.data import SPLITS, Dataset, load_dataset
from makemore.errors import MakemoreError
from makemore.loggers import Loggers, build_loggers
from makemore.loop import CHECKPOINT, Diverged, Interrupted, fit
from makemore.models import build_model, loss_on
from makemore.plots import model_figures
from makemore.sample import generate

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float:
    """Run one job in Hydra's run directory and return its final dev loss, the value a sweeper minimises."""
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    multirun = hydra.mode == RunMode.MULTIRUN
    resume = None
    try:
        progress = cfg.progress
        if cfg.get("resume"):
            cfg, resume = load_resume(Path(cfg.resume), hydra.overrides.task, multirun)
        elif (run_dir / "metrics.json").exists():
            raise MakemoreError(f"{run_dir} already holds a run; leave hydra.run.dir to its default or pick a new one")
        cfg = resolve_rerun(cfg, hydra.overrides.task)
        cfg.progress = progress
        if multirun and cfg.logger.get("wandb") and cfg.logger.wandb.group is None:
            with open_dict(cfg):
                cfg.logger.wandb.group = Path(hydra.sweep.dir).name  # W&B groups a sweep's members together
        return run(cfg, run_dir, resume)["dev_loss"]
    except Exception as e:
        if not (isinstance(e, MakemoreError) or multirun):
            raise  # a bug in a single run deserves its traceback
        status = {Diverged: "diverged", Interrupted: "interrupted"}.get(type(e), "failed")
        reason = str(e) if isinstance(e, MakemoreError) else f"{type(e).__name__}: {e}"
        if not (run_dir / "metrics.json").exists() or status != "failed":  # never overwrite a finished run's result
            write_json(run_dir / "metrics.json", {"status": status, "error": reason})
        print(f"error: {reason}", file=sys.stderr)
        if isinstance(e, Interrupted):
            if multirun:
                raise KeyboardInterrupt from None  # Ctrl-C stops the whole sweep, not just this member
            sys.exit(128 + e.signum)
        if multirun:
            return math.inf  # the sweep records this member as failed and goes on
        sys.exit(1)


def saved_config_only(what: str, task_overrides) -> None:
    """rerun= and resume= take a run's saved config as it is (but for `progress`): others would change it."""
    others = [o for o in task_overrides if not o.startswith((f"{what}=", "progress="))]
    if others:
        raise MakemoreError(f"{what} takes the saved config as it is; drop the other overrides {others}")


def load_resume(run_dir: Path, task_overrides, multirun: bool) -> tuple[DictConfig, dict]:
    """`resume=<run dir>`: that run's config and its last checkpoint."""
    saved_config_only("resume", task_overrides)
    if multirun:
        raise MakemoreError("resume works on one run at a time; drop -m")
    metrics = run_dir / "metrics.json"
    if metrics.exists() and json.loads(metrics.read_text()).get("status") == "ok":
        raise MakemoreError(f"{run_dir} already finished; rerun it with python train.py rerun={run_dir}")
    checkpoint = load_checkpoint(run_dir / CHECKPOINT, {"optimizer", "state"})
    return OmegaConf.create(checkpoint["config"]), checkpoint


def resolve_rerun(cfg: DictConfig, task_overrides) -> DictConfig:
    """`rerun=<run dir>` replaces the composed config with that run's saved one, so today's conf/ can't change it."""
    if not cfg.get("rerun"):
        return cfg
    saved_config_only("rerun", task_overrides)
    saved_path = Path(cfg.rerun) / ".hydra" / "config.yaml"
    if not saved_path.is_file():
        raise MakemoreError(f"no saved config at {saved_path}; rerun=<a run directory under outputs/>")
    saved = OmegaConf.load(saved_path)
    return resolve_rerun(saved, []) if saved.get("rerun") else saved  # a rerun of a rerun follows the chain


def run_overrides(*overrides: str) -> dict:
    """Run `python train.py <overrides>` in-process, in a throwaway directory; return its metrics (for experiments)."""
    with tempfile.TemporaryDirectory() as tmp:
        return run(compose_train_config(*overrides), Path(tmp))


def check_settings(cfg: DictConfig) -> None:
    """Refuse nonsense sizes before any work is done."""
    for key in ("steps", "eval_interval", "log_interval", "checkpoint_interval", "threads"):
        minimum = 0 if key in ("steps", "checkpoint_interval") else 1
        if not isinstance(cfg[key], int) or cfg[key] < minimum:
            raise MakemoreError(f"{key} must be an integer >= {minimum}, got {cfg[key]!r}")
    if cfg.batch_size is not None and (not isinstance(cfg.batch_size, int) or cfg.batch_size < 1):
        raise MakemoreError(f"batch_size must be a positive integer (or null for full batch), got {cfg.batch_size!r}")


def pick_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MakemoreError("device=cuda but no CUDA GPU is available; use device=cpu or device=auto")
    if name not in ("cpu", "cuda"):
        raise MakemoreError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def check_memory(cfg: DictConfig, vocab_size: int) -> None:
    """Size the model on the meta device (no allocation) and refuse one that cannot fit in RAM."""
    with torch.device("meta"):
        probe = build_model(cfg.model, vocab_size)
    numbers = sum(t.numel() for t in probe.parameters()) * 4 + sum(b.numel() for b in probe.buffers())
    needed = numbers * 4  # float32; weights, gradients and two optimizer moments
    available = available_memory()
    if available and needed > 0.8 * available:
        raise MakemoreError(
            f"model {cfg.model.name} needs about {needed / 2**30:,.1f} GiB to train but only "
            f"{available / 2**30:,.1f} GiB is free; make it smaller"
        )


def available_memory() -> int | None:
    """Bytes of memory available now (Linux), or None where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def run(cfg: DictConfig, run_dir: Path, resume: dict | None = None) -> dict:
    """Train (or continue from the checkpoint `resume`), evaluate on every split, write the run directory.

    Returns metrics.json's contents.
    """
    check_settings(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)  # tiny models run ~12x slower on 2 threads than on 1
    device = pick_device(cfg.device)
    data = cfg.data
    dataset = load_dataset(data.path, cfg.model.block_size, data.boundary, tuple(data.fractions), data.seed)
    if resume and tuple(resume["vocab"]) != dataset.vocab.chars:
        raise MakemoreError(f"the checkpoint's vocabulary differs from the data in {data.path}; resume with the same data")
    check_memory(cfg, dataset.vocab.size)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, dataset.vocab.size).to(device)
    params = sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
    config = OmegaConf.to_container(cfg, resolve=True)
    log.info("%s: %s parameters, %s tokens, %s train examples", cfg.model.name, f"{params:,}",
             dataset.vocab.size, f"{len(dataset.Y['train']):,}")
    X = {split: dataset.X[split].to(device) for split in SPLITS}
    Y = {split: dataset.Y[split].to(device) for split in SPLITS}
    ids = resume["ids"] if resume else {"wandb": secrets.token_hex(4)}  # a resumed run logs into the same W&B run
    loggers = build_loggers(cfg.logger, run_dir, config, run_dir.name, ids["wandb"], resume["state"]["step"] if resume else None)
    try:
        if getattr(model, "trained_by_counting", False):
            log.info("trained by counting the train split: no optimizer steps")
            start = time.perf_counter()
            model.fit(X["train"], Y["train"])
            progress = {"steps": 0, "train_seconds": time.perf_counter() - start, "eval_seconds": 0.0}
            history = []
        else:
            extra = {"vocab": list(dataset.vocab.chars), "config": config, "ids": ids}
            progress, history = fit(model, X, Y, cfg, loggers, run_dir, extra, resume)
        losses = {split: loss_on(model, X[split], Y[split]) for split in SPLITS}
        metrics = {
            "status": "ok",
            **{f"{split}_loss": losses[split] for split in SPLITS},
            "params": params,
            **progress,
            "steps_per_second": progress["steps"] / progress["train_seconds"] if progress["steps"] else 0.0,
            "target": cfg.target,
            "target_met": losses["dev"] < cfg.target,
        }
        samples = generate(model, dataset.vocab, cfg.model.block_size, cfg.samples, seed=cfg.seed)
        write_outputs(run_dir, model, dataset, config, metrics, samples, history)
        log_final(loggers, model, dataset, config, metrics, samples)
    finally:
        loggers.close()
    print(f"{cfg.model.name} ({params:,} params, {metrics['steps']:,} steps): "
          f"train {losses['train']:.4f} | dev {losses['dev']:.4f} | test {losses['test']:.4f} | "
          f"target {cfg.target}: {'met' if metrics['target_met'] else 'not met'}")
    return metrics


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def write_outputs(
    run_dir: Path, model: nn.Module, dataset: Dataset, config: dict, metrics: dict, samples: list[str], history: list[dict]
) -> None:
    """model.pt, samples.txt and history.csv first, metrics.json last: a metrics file means the run finished."""
    checkpoint = {"model": model.state_dict(), "vocab": list(dataset.vocab.chars), "config": config}
    save_atomic(checkpoint, run_dir / "model.pt")
    (run_dir / "samples.txt").write_text("\n".join(samples) + "\n", encoding="utf-8")
    with open(run_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "loss/train", "loss/dev", "lr"])
        writer.writeheader()
        writer.writerows(history)
    write_json(run_dir / "metrics.json", metrics)


def log_final(loggers: Loggers, model: nn.Module, dataset: Dataset, config: dict, metrics: dict, samples: list[str]) -> None:
    """Final losses on the full splits, HParams, samples and the model's picture."""
    step = metrics["steps"]
    final = {f"loss/{split}": metrics[f"{split}_loss"] for split in SPLITS}
    hparams = {k: v for k, v in flatten(config).items() if not k.startswith(("logger.", "rerun", "progress"))}
    loggers.summary(hparams, final, step)
    loggers.text("samples", "\n".join(samples), step)
    for tag, figure in model_figures(model, dataset.vocab).items():
        loggers.figure(tag, figure, step)
