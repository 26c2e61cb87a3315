"""One training run: data -> model -> loop -> loggers -> run directory. `train(cfg)` is Hydra's task function."""

from __future__ import annotations

import csv
import logging
import math
import secrets
import tempfile
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from makemore import provenance
from makemore.checkpoint import load_checkpoint, save_atomic
from makemore.cli import ended
from makemore.config import compose_train_config
from makemore.data import SPLITS, Dataset, build_items, make_dataset
from makemore.errors import MakemoreError
from makemore.loggers import Loggers, build_loggers, experiment_hparams
from makemore.loop import TrainState, fit
from makemore.models import build_model, loss_on
from makemore.preflight import pick_device, prepare
from makemore.report import dashboard_root, refresh_dashboard
from makemore.rundir import CHECKPOINT, HISTORY, METRICS, MODEL, SAMPLES, ended_metrics, write_json
from makemore.sample import generate
from makemore.search import trial_reporter

log = logging.getLogger(__name__)
OVERFIT_MARGIN = 0.1  # nats above the lowest possible loss that debug=overfit still calls memorised
OVERFITTING_WARNING = 0.02  # nats by which the final dev loss may exceed the best before the run warns


def train(cfg: DictConfig) -> float:
    """Run one job in Hydra's run directory and return its final dev loss, the value a sweeper minimises.

    A single run's config was checked, and for rerun=/resume= replaced by the saved one, before Hydra wrote
    anything (makemore.record.RunRecord); a sweep member is checked here, in its own new directory. How a run
    that stops early ends (its status, its exit code) is makemore.cli.ended's.
    """
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    sweep_dir = Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None
    try:
        return train_job(cfg, run_dir, sweep_dir)
    except Exception as error:
        return ended(error, run_dir, sweep_dir)


def train_job(cfg: DictConfig, run_dir: Path, sweep_dir: Path | None) -> float:
    """A single run, or a member of the sweep in `sweep_dir`; its final dev loss."""
    if sweep_dir and (cfg.get("resume") or cfg.get("rerun")):
        raise MakemoreError("rerun= and resume= take one run at a time; drop -m")
    if sweep_dir:  # in a continued sweep, a member that ended is kept; an interrupted one continues
        kept = ended_member(run_dir)
        if kept is not None:
            return kept
    continues = cfg.get("resume") or (sweep_dir and (run_dir / CHECKPOINT).is_file())
    resume = load_checkpoint(run_dir / CHECKPOINT, {"optimizer", "state"}) if continues else None
    if sweep_dir and cfg.logger.get("wandb") and cfg.logger.wandb.group is None:
        with open_dict(cfg):
            cfg.logger.wandb.group = sweep_dir.name  # W&B groups a sweep's members together
    metrics = run(cfg, run_dir, resume, trial_reporter(cfg.get("trial")))
    if not sweep_dir and "tensorboard" in cfg.logger.backends:  # a sweep refreshes its view once, at its end
        refresh_dashboard(dashboard_root(run_dir))
    return math.inf if metrics["dev_loss"] is None else metrics["dev_loss"]


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


def run(cfg: DictConfig, run_dir: Path, resume: dict | None = None, on_eval=None) -> dict:
    """Train (or continue from the checkpoint `resume`), evaluate on every split, write the run directory.
    `on_eval(step, dev_loss, train_seconds)`: see makemore.loop.fit (an Optuna trial's pruning).

    Returns metrics.json's contents.
    """
    cfg, items, vocab = prepare(cfg)
    if resume and tuple(resume["vocab"]) != vocab.chars:
        raise MakemoreError(
            f"the checkpoint's vocabulary differs from the data in {cfg.data.path}; resume with the same data"
        )
    device = pick_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)  # tiny models run ~12x slower on 2 threads than on 1
    dataset = make_dataset(items, vocab, cfg.model.block_size, tuple(cfg.data.fractions), cfg.data.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, vocab.size).to(device)
    params = sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
    config = OmegaConf.to_container(cfg, resolve=True)
    record, patch = provenance.collect(cfg, items, dataset, str(device))
    if resume:  # a resumed run keeps the provenance it started with; its data must be the same (or accepted)
        provenance.refuse_changed_data("resume", run_dir, cfg, items)
    else:
        provenance.write(run_dir, record, patch)
    log.info(
        "%s: %s parameters, %s tokens, %s train examples",
        cfg.model.name,
        f"{params:,}",
        vocab.size,
        f"{len(dataset.Y['train']):,}",
    )
    X, Y, rows_per_batch = examples(model, dataset, cfg, device)
    counted = getattr(model, "trained_by_counting", False)
    ids = resume["ids"] if resume else {"wandb": secrets.token_hex(4)}  # a resumed run logs into the same W&B run
    hparams = experiment_hparams(config, counted=counted)  # W&B gets them too, with the provenance
    start_step = resume["state"]["step"] if resume else 0
    purge_step = start_step if resume else None  # a resumed run's events after its checkpoint are replaced
    wandb_config = {**hparams, "provenance": record}
    loggers = build_loggers(cfg.logger, run_dir, wandb_config, run_dir.name, ids["wandb"], purge_step)
    try:
        loggers.text("provenance", provenance.markdown(record), start_step)
        if counted:
            log.info("trained by counting the train split: no optimizer steps")
            start = time.perf_counter()
            model.fit(X["train"], Y["train"])
            state = TrainState(train_seconds=time.perf_counter() - start)
        else:
            extra = {"vocab": list(vocab.chars), "config": config, "ids": ids}
            state = fit(model, X, Y, cfg, loggers, run_dir, extra, resume, on_eval, rows_per_batch)
        start = time.perf_counter()
        losses = {split: loss_on(model, X[split], Y[split], vocab.size) for split in SPLITS}
        state.eval_seconds += time.perf_counter() - start  # the final evaluation counts too
        if state.history and state.step == cfg.steps:  # the last row holds the final evaluation's dev loss
            state.history[-1]["loss/dev"] = losses["dev"]
        metrics = final_metrics(cfg, state, losses, params, rows_per_batch)
        if cfg.overfit_batch:
            metrics["overfit"] = overfit_verdict(X["train"], Y["train"], losses["train"], counted)
        if cfg.rerun:
            metrics["reproduced"], metrics["rerun_verdict"] = provenance.verdict(Path(cfg.rerun), record, metrics)
        samples = generate(model, vocab, cfg.model.block_size, cfg.samples, seed=cfg.seed)
        write_outputs(run_dir, model, dataset, config, metrics, samples, state.history)
        log_final(loggers, model, dataset, hparams, metrics, losses, samples)
        if metrics["target"] is not None and loggers.backends:
            curve = [(row["step"], row["loss/dev"]) for row in state.history if row.get("loss/dev") is not None]
            loggers.target_line(metrics["target"], curve or [(metrics["steps"], losses["dev"])])
    finally:
        loggers.close()
    report_end(cfg, metrics, losses)
    if cfg.rerun:
        print(f"rerun verdict: {metrics['rerun_verdict']}")
    return metrics


def examples(
    model: nn.Module, dataset: Dataset, cfg: DictConfig, device: torch.device
) -> tuple[dict, dict, int | None]:
    """The tensors the model trains and is evaluated on, by split: windows, or whole items for a causal model
    whose context holds every prefix (then also the items a batch draws). debug=overfit keeps one fixed batch."""
    rows_per_batch = None
    if trains_on_whole_items(model, dataset, cfg.overfit_batch):  # every example's window is its item's prefix
        X, Y = {}, {}
        for split in SPLITS:
            X[split], Y[split] = (t.to(device) for t in build_items(dataset.words[split], dataset.vocab))
        if cfg.batch_size is not None:  # batch_size still counts next characters: that many, in whole items
            rows_per_batch = max(1, round(cfg.batch_size * len(Y["train"]) / len(dataset.Y["train"])))
        log.info(
            "training and evaluating on whole items, a loss at every position: %s train items, %s a batch",
            f"{len(Y['train']):,}",
            rows_per_batch or "all",
        )
    else:
        X = {split: dataset.X[split].to(device) for split in SPLITS}
        Y = {split: dataset.Y[split].to(device) for split in SPLITS}
    if cfg.overfit_batch:  # debug=overfit: one fixed batch is the whole train split, trained on every step
        keep = torch.randperm(len(Y["train"]), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.overfit_batch]
        X["train"], Y["train"] = X["train"][keep.to(device)], Y["train"][keep.to(device)]
    return X, Y, rows_per_batch


def final_metrics(cfg: DictConfig, state: TrainState, losses: dict, params: int, rows_per_batch: int | None) -> dict:
    """metrics.json: the final losses, the best evaluation (the end included), the timings and the target."""
    best = state.best
    if losses["dev"] < best.dev_loss:  # the final weights beat every evaluation before them
        best = type(best)(losses["dev"], state.step)
    metrics = {
        "status": "ok",
        **{f"{split}_loss": loss if math.isfinite(loss) else None for split, loss in losses.items()},
        "params": params,
        "steps": state.step,
        "train_seconds": state.train_seconds,
        "eval_seconds": state.eval_seconds,
        **state.reached,
        **({"early_stopped_at": state.step} if state.early_stopped else {}),
        "weights": f"best dev, step {best.step} (restored by early_stopping)" if state.early_stopped else "last step",
        **({"items_per_batch": rows_per_batch} if rows_per_batch else {}),
        "steps_per_second": state.step / state.train_seconds if state.step else 0.0,
        "best_dev_loss": best.dev_loss if math.isfinite(best.dev_loss) else None,
        "best_dev_step": best.step,
        "target": cfg.target,
        "target_met": cfg.target is not None and losses["dev"] < cfg.target,
    }
    infinite = [split for split, loss in losses.items() if not math.isfinite(loss)]
    if infinite:  # JSON has no infinity: the loss is null and the note says why
        metrics["note"] = (
            f"{', '.join(infinite)} loss is infinite: the model gives probability 0 to some targets "
            "(an n-gram never seen in train, with model.alpha=0)"
        )
    return metrics


def overfit_verdict(X: torch.Tensor, Y: torch.Tensor, loss: float, counted: bool) -> dict:
    """debug=overfit: the loss on the one batch against the lowest any model can reach on it."""
    if counted:
        return {"verdict": "not applicable: a counting model takes no gradient steps"}
    floor = lowest_possible_loss(X, Y)
    return {"loss": loss, "floor": floor, "verdict": "pass" if loss <= floor + OVERFIT_MARGIN else "fail"}


def report_end(cfg: DictConfig, metrics: dict, losses: dict) -> None:
    """The last lines: the losses and the target, early stopping, the overfit verdict or an overfitting warning."""
    target = (
        "no target" if cfg.target is None else f"target {cfg.target}: {'met' if metrics['target_met'] else 'not met'}"
    )
    print(
        f"{cfg.model.name} ({metrics['params']:,} params, {metrics['steps']:,} steps): "
        f"train {losses['train']:.4f} | dev {losses['dev']:.4f} | test {losses['test']:.4f} | {target}"
    )
    best_dev, best_step = metrics["best_dev_loss"], metrics["best_dev_step"]
    if "early_stopped_at" in metrics:
        print(
            f"early_stopping: no better dev loss in {cfg.early_stopping} evaluations, stopped at step "
            f"{metrics['early_stopped_at']:,}; model.pt holds the best-dev weights, of step {best_step:,}"
        )
    if cfg.overfit_batch:
        check_overfit(metrics["overfit"], cfg.overfit_batch)
    elif best_dev is not None and losses["dev"] > best_dev + OVERFITTING_WARNING:
        print(
            f"warning: overfitting: dev loss was {best_dev:.4f} at step {best_step:,} and ended at "
            f"{losses['dev']:.4f}; try fewer steps (steps={best_step}), model.dropout, optim.weight_decay, "
            f"or early_stopping=<evaluations> (it keeps the best weights)"
        )


def trains_on_whole_items(model: nn.Module, dataset: Dataset, overfit_batch: int) -> bool:
    """A causal model (one with forward_items) whose block_size holds every item's whole prefix trains on items:
    the same examples and predictions as windows, ~8x fewer forward passes. debug=overfit keeps its windows."""
    longest = max(len(item) for items in dataset.words.values() for item in items)
    return hasattr(model, "forward_items") and dataset.block_size > longest and not overfit_batch


def lowest_possible_loss(X: torch.Tensor, Y: torch.Tensor) -> float:
    """The cross-entropy of the best possible predictor on these examples: identical contexts with different
    next tokens can't all be right, so even a memorising model keeps their conditional entropy."""
    _, context_id = torch.unique(X, dim=0, return_inverse=True)
    _, pair_id, pair_count = torch.unique(
        torch.stack([context_id, Y], 1), dim=0, return_inverse=True, return_counts=True
    )
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
        raise MakemoreError(
            f"overfit one batch: FAIL, {line}: the model does not fit even one batch; check that its "
            "forward uses its input, its size and its learning rate"
        )
    print(f"overfit one batch: PASS, {line}")


def write_outputs(
    run_dir: Path,
    model: nn.Module,
    dataset: Dataset,
    config: dict,
    metrics: dict,
    samples: list[str],
    history: list[dict],
) -> None:
    """model.pt, samples.txt and history.csv first, metrics.json last: a metrics file means the run finished."""
    checkpoint = {"model": model.state_dict(), "vocab": list(dataset.vocab.chars), "config": config}
    save_atomic(checkpoint, run_dir / MODEL)
    (run_dir / SAMPLES).write_text("\n".join(samples) + "\n", encoding="utf-8")
    with open(run_dir / HISTORY, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "loss/train", "loss/dev", "lr"])
        writer.writeheader()
        writer.writerows(history)
    write_json(run_dir / METRICS, metrics)


def log_final(
    loggers: Loggers, model: nn.Module, dataset: Dataset, hparams: dict, metrics: dict, losses: dict, samples: list[str]
) -> None:
    """Final losses on the full splits, HParams, samples and the model's picture."""
    if not loggers.backends:  # logger=none: don't draw pictures nobody receives
        return
    from makemore.plots import missing_glyphs_told_once, model_figures  # matplotlib takes 0.5 s: only to draw

    step = metrics["steps"]
    final = {f"loss/{split}": losses[split] for split in SPLITS}
    final.update(
        {
            "run/params": metrics["params"],
            "run/train_seconds": metrics["train_seconds"],
            "run/target_met": float(metrics["target_met"]),
            "run/best_dev_loss": metrics["best_dev_loss"] or math.inf,
        }
    )  # run/: one chart group, after loss/
    if "step_to_target" in metrics:
        final["run/step_to_target"] = metrics["step_to_target"]
    loggers.summary(hparams, final, step)
    loggers.text("samples", "\n".join(samples), step)
    with missing_glyphs_told_once():
        for tag, figure in model_figures(model, dataset.vocab).items():
            loggers.figure(tag, figure, step)
