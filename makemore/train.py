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
from makemore.config import compose_train_config, ended_metrics
from makemore.data import SPLITS, Dataset, Vocab, build_items, build_vocab, make_dataset, read_items, resolve_path
from makemore.errors import MakemoreError
from makemore.loggers import Loggers, build_loggers, experiment_hparams, write_target_line
from makemore.loop import CHECKPOINT, Diverged, Interrupted, fit
from makemore.models import build_model, eval_rows, loss_on
from makemore.sample import generate
from makemore.schema import validate
from makemore.search import Pruned, trial_reporter

log = logging.getLogger(__name__)
OVERFIT_MARGIN = 0.1  # nats above the lowest possible loss that debug=overfit still calls memorised
OVERFITTING_WARNING = 0.02  # nats by which the final dev loss may exceed the best before the run warns


def train(cfg: DictConfig) -> float:
    """Run one job in Hydra's run directory and return its final dev loss, the value a sweeper minimises.

    A single run's config was checked, and for rerun=/resume= replaced by the saved one, before Hydra wrote
    anything (makemore.record.RunRecord); a sweep member is checked here, in its own new directory.
    """
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    multirun = hydra.mode == RunMode.MULTIRUN
    try:
        if multirun and (cfg.get("resume") or cfg.get("rerun")):
            raise MakemoreError("rerun= and resume= take one run at a time; drop -m")
        if multirun:  # in a continued sweep, a member that ended is kept; an interrupted one continues
            kept = ended_member(run_dir)
            if kept is not None:
                return kept
        continues = cfg.get("resume") or (multirun and (run_dir / CHECKPOINT).is_file())
        resume = load_checkpoint(run_dir / CHECKPOINT, {"optimizer", "state"}) if continues else None
        if multirun and cfg.logger.get("wandb") and cfg.logger.wandb.group is None:
            with open_dict(cfg):
                cfg.logger.wandb.group = Path(hydra.sweep.dir).name  # W&B groups a sweep's members together
        metrics = run(cfg, run_dir, resume, trial_reporter(cfg.get("trial")))
        if not multirun and metrics["target"] is not None and "tensorboard" in cfg.logger.backends:
            write_target_line(run_dir, metrics["target"], metrics["steps"])  # a sweep draws one for all members
        return math.inf if metrics["dev_loss"] is None else metrics["dev_loss"]
    except Pruned as e:  # the study's pruner stopped this trial: a result, not a failure
        write_json(run_dir / "metrics.json", {"status": f"pruned at step {e.step}", "pruned_at_step": e.step,
                                              "dev_loss_at_prune": e.dev_loss, "train_seconds": e.train_seconds})
        print(f"trial {cfg.trial} {e}")
        return math.inf
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


def ended_member(run_dir: Path) -> float | None:
    """The result of a sweep member that already ended (ok, failed, diverged or pruned), or None to (re)run it."""
    metrics = ended_metrics(run_dir)
    if metrics is None:
        return None
    print(f"{run_dir.name}: ended earlier ({metrics.get('status')}), kept as it is")
    dev = metrics.get("dev_loss") if metrics.get("status") == "ok" else None
    return math.inf if dev is None else dev


def run_overrides(*overrides: str) -> dict:
    """Run `python train.py <overrides>` in-process, in a throwaway directory; return its metrics (for experiments)."""
    with tempfile.TemporaryDirectory() as tmp:
        return run(compose_train_config(*overrides), Path(tmp))


def prepare(cfg: DictConfig) -> tuple[DictConfig, list[str], Vocab]:
    """Everything that can refuse a run before it writes a byte: the schema, the data file, the memory it needs.

    Returns the checked config, the data's items and its vocabulary.
    """
    cfg = validate(cfg)
    items = read_items(resolve_path(cfg.data.path))
    vocab = build_vocab(items, cfg.data.boundary)
    check_memory(cfg, vocab.size, sum(map(len, items)) + len(items))
    return cfg, items, vocab


def pick_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MakemoreError("device=cuda but no CUDA GPU is available; use device=cpu or device=auto")
    return torch.device(name)


def check_memory(cfg: DictConfig, vocab_size: int, tokens: int) -> None:
    """Refuse a run that cannot fit in RAM: the model sized on the meta device (no allocation), its optimizer,
    the examples of every split, and the largest logits of a training step or an evaluation chunk."""
    with torch.device("meta"):
        probe = build_model(cfg.model, vocab_size)  # a table too large is refused here, with its own message
    model = sum(t.numel() for t in probe.parameters()) * 4 * 4 + sum(b.numel() for b in probe.buffers()) * 4
    examples = tokens * (cfg.model.block_size + 1) * 8 * 4  # int64 X and Y, and the temporaries that cut them
    train_rows = int(tokens * cfg.data.fractions[0]) + 1 if cfg.batch_size is None else cfg.batch_size
    logits = (train_rows + eval_rows(vocab_size)) * vocab_size * 4 * 3  # logits, softmax and gradient
    needed, available = model + examples + logits, available_memory()
    if available and needed > 0.8 * available:
        parts = f"weights and optimizer {model / 2**30:,.1f}, examples {examples / 2**30:,.1f}, logits {logits / 2**30:,.1f}"
        raise MakemoreError(
            f"model {cfg.model.name} needs about {needed / 2**30:,.1f} GiB to train but only "
            f"{available / 2**30:,.1f} GiB is free ({parts} GiB); make the model, block_size or batch_size smaller"
        )


def available_memory() -> int | None:
    """Bytes of memory available now (Linux), or None where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def run(cfg: DictConfig, run_dir: Path, resume: dict | None = None, on_eval=None) -> dict:
    """Train (or continue from the checkpoint `resume`), evaluate on every split, write the run directory.
    `on_eval(step, dev_loss)`: see makemore.loop.fit (an Optuna trial's pruning).

    Returns metrics.json's contents.
    """
    cfg, items, vocab = prepare(cfg)
    if resume and tuple(resume["vocab"]) != vocab.chars:
        raise MakemoreError(f"the checkpoint's vocabulary differs from the data in {cfg.data.path}; resume with the same data")
    device = pick_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)  # tiny models run ~12x slower on 2 threads than on 1
    dataset = make_dataset(items, vocab, cfg.model.block_size, tuple(cfg.data.fractions), cfg.data.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, vocab.size).to(device)
    params = sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
    config = OmegaConf.to_container(cfg, resolve=True)
    log.info("%s: %s parameters, %s tokens, %s train examples", cfg.model.name, f"{params:,}",
             vocab.size, f"{len(dataset.Y['train']):,}")
    rows_per_batch = None
    if trains_on_whole_items(model, dataset, cfg.overfit_batch):  # every example's window is its item's prefix
        X, Y = {}, {}
        for split in SPLITS:
            X[split], Y[split] = (t.to(device) for t in build_items(dataset.words[split], vocab))
        if cfg.batch_size is not None:  # batch_size still counts next characters: that many, in whole items
            rows_per_batch = max(1, round(cfg.batch_size * len(Y["train"]) / len(dataset.Y["train"])))
        log.info("training and evaluating on whole items, a loss at every position: %s train items, %s a batch",
                 f"{len(Y['train']):,}", rows_per_batch or "all")
    else:
        X = {split: dataset.X[split].to(device) for split in SPLITS}
        Y = {split: dataset.Y[split].to(device) for split in SPLITS}
    if cfg.overfit_batch:  # debug=overfit: one fixed batch is the whole train split, trained on every step
        keep = torch.randperm(len(Y["train"]), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.overfit_batch]
        X["train"], Y["train"] = X["train"][keep.to(device)], Y["train"][keep.to(device)]
    ids = resume["ids"] if resume else {"wandb": secrets.token_hex(4)}  # a resumed run logs into the same W&B run
    hparams = experiment_hparams(config, counted=getattr(model, "trained_by_counting", False))  # W&B's config too
    loggers = build_loggers(cfg.logger, run_dir, hparams, run_dir.name, ids["wandb"], resume["state"]["step"] if resume else None)
    try:
        if getattr(model, "trained_by_counting", False):
            log.info("trained by counting the train split: no optimizer steps")
            start = time.perf_counter()
            model.fit(X["train"], Y["train"])
            progress = {"steps": 0, "train_seconds": time.perf_counter() - start, "eval_seconds": 0.0,
                        "best": {"dev_loss": math.inf, "step": 0}}
            history = []
        else:
            extra = {"vocab": list(vocab.chars), "config": config, "ids": ids}
            progress, history = fit(model, X, Y, cfg, loggers, run_dir, extra, resume, on_eval, rows_per_batch)
        losses = {split: loss_on(model, X[split], Y[split], vocab.size) for split in SPLITS}
        best = progress.pop("best")
        if losses["dev"] < best["dev_loss"]:  # the final weights beat every evaluation before them
            best = {"dev_loss": losses["dev"], "step": progress["steps"]}
        progress.setdefault("weights", "last step")
        metrics = {
            "status": "ok",
            **{f"{split}_loss": loss if math.isfinite(loss) else None for split, loss in losses.items()},
            "params": params,
            **progress,
            **({"items_per_batch": rows_per_batch} if rows_per_batch else {}),
            "steps_per_second": progress["steps"] / progress["train_seconds"] if progress["steps"] else 0.0,
            "best_dev_loss": best["dev_loss"] if math.isfinite(best["dev_loss"]) else None,
            "best_dev_step": best["step"],
            "target": cfg.target,
            "target_met": cfg.target is not None and losses["dev"] < cfg.target,
        }
        if cfg.overfit_batch and not progress["steps"]:
            metrics["overfit"] = {"verdict": "not applicable: a counting model takes no gradient steps"}
        elif cfg.overfit_batch:
            floor = lowest_possible_loss(X["train"], Y["train"])
            passed = losses["train"] <= floor + OVERFIT_MARGIN
            metrics["overfit"] = {"loss": losses["train"], "floor": floor, "verdict": "pass" if passed else "fail"}
        infinite = [split for split, loss in losses.items() if not math.isfinite(loss)]
        if infinite:  # JSON has no infinity: the loss is null and the note says why
            metrics["note"] = (f"{', '.join(infinite)} loss is infinite: the model gives probability 0 to some targets "
                               "(an n-gram never seen in train, with model.alpha=0)")
        samples = generate(model, vocab, cfg.model.block_size, cfg.samples, seed=cfg.seed)
        write_outputs(run_dir, model, dataset, config, metrics, samples, history)
        log_final(loggers, model, dataset, hparams, metrics, losses, samples)
    finally:
        loggers.close()
    target = "no target" if cfg.target is None else f"target {cfg.target}: {'met' if metrics['target_met'] else 'not met'}"
    print(f"{cfg.model.name} ({params:,} params, {metrics['steps']:,} steps): "
          f"train {losses['train']:.4f} | dev {losses['dev']:.4f} | test {losses['test']:.4f} | {target}")
    if "early_stopped_at" in metrics:
        print(f"early_stopping: no better dev loss in {cfg.early_stopping} evaluations, stopped at step "
              f"{metrics['early_stopped_at']:,}; model.pt holds the best-dev weights, of step {best['step']:,}")
    if cfg.overfit_batch:
        check_overfit(metrics["overfit"], cfg.overfit_batch)
    elif losses["dev"] > best["dev_loss"] + OVERFITTING_WARNING:
        print(f"warning: overfitting: dev loss was {best['dev_loss']:.4f} at step {best['step']:,} and ended at "
              f"{losses['dev']:.4f}; try fewer steps (steps={best['step']}), model.dropout, optim.weight_decay, "
              f"or early_stopping=<evaluations> (it keeps the best weights)")
    return metrics


def trains_on_whole_items(model: nn.Module, dataset: Dataset, overfit_batch: int) -> bool:
    """A causal model (one with forward_items) whose block_size holds every item's whole prefix trains on items:
    the same examples and predictions as windows, ~8x fewer forward passes. debug=overfit keeps its windows."""
    longest = max(len(item) for items in dataset.words.values() for item in items)
    return hasattr(model, "forward_items") and dataset.block_size > longest and not overfit_batch


def lowest_possible_loss(X: torch.Tensor, Y: torch.Tensor) -> float:
    """The cross-entropy of the best possible predictor on these examples: identical contexts with different
    next tokens can't all be right, so even a memorising model keeps their conditional entropy."""
    _, context_id = torch.unique(X, dim=0, return_inverse=True)
    _, pair_id, pair_count = torch.unique(torch.stack([context_id, Y], 1), dim=0, return_inverse=True,
                                          return_counts=True)
    context_count = torch.bincount(context_id)
    probability = pair_count[pair_id].double() / context_count[context_id].double()
    return -probability.log().mean().item()


def check_overfit(result: dict, batch: int) -> None:
    """Print Karpathy's "overfit one batch" verdict; a model that can't fit one batch fails the run."""
    if "loss" not in result:
        print(f"overfit one batch: {result['verdict']}")
        return
    line = f"loss {result['loss']:.4f} on the batch of {batch}, lowest possible {result['floor']:.4f}"
    if result["verdict"] == "fail":
        raise MakemoreError(f"overfit one batch: FAIL, {line}: the model does not fit even one batch; check that its "
                            "forward uses its input, its size and its learning rate")
    print(f"overfit one batch: PASS, {line}")


def write_json(path: Path, obj: dict) -> None:
    """Valid JSON (no NaN or Infinity), written atomically."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
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


def log_final(
    loggers: Loggers, model: nn.Module, dataset: Dataset, hparams: dict, metrics: dict, losses: dict, samples: list[str]
) -> None:
    """Final losses on the full splits, HParams, samples and the model's picture."""
    if not loggers.backends:  # logger=none: don't draw pictures nobody receives
        return
    from makemore.plots import model_figures  # matplotlib costs half a second to import: only when drawing

    step = metrics["steps"]
    final = {f"loss/{split}": losses[split] for split in SPLITS}
    final.update({"run/params": metrics["params"], "run/train_seconds": metrics["train_seconds"],
                  "run/target_met": float(metrics["target_met"]),
                  "run/best_dev_loss": metrics["best_dev_loss"] or math.inf})  # run/: one chart group, after loss/
    if "step_to_target" in metrics:
        final["run/step_to_target"] = metrics["step_to_target"]
    loggers.summary(hparams, final, step)
    loggers.text("samples", "\n".join(samples), step)
    for tag, figure in model_figures(model, dataset.vocab).items():
        loggers.figure(tag, figure, step)
