"""One training run: data -> model -> loop -> loggers -> run directory. `train(cfg)` is Hydra's task function."""

from __future__ import annotations

import csv
import logging
import math
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from makemore import lock, pictures, provenance, timeline
from makemore.checkpoint import load_checkpoint, save_atomic
from makemore.cli import settle_stopped_run
from makemore.config import compose_train_config, experiment_hparams
from makemore.data import SPLITS, Dataset, Vocab, build_items, make_dataset, trains_on_whole_items
from makemore.errors import MakemoreError
from makemore.loggers import Loggers, RunInfo, build_loggers, writes_tensorboard
from makemore.loop import Member, TrainState, fit
from makemore.metrics import final_summary
from makemore.models import build_model, loss_on
from makemore.pictures import PictureProcess, may_fork
from makemore.preflight import pick_device, prepare
from makemore.report import refresh_dashboard
from makemore.rundir import (
    CHECKPOINT,
    HISTORY,
    METRICS,
    MODEL,
    SAMPLES,
    SWEEP_RECORD,
    dashboard_root,
    ended_metrics,
    write_json,
)
from makemore.sample import generate
from makemore.search import trial_reporter
from makemore.settings import run_settings
from makemore.weight_average import AVERAGE_DEV, JUDGED
from makemore.workers import die_with_the_sweep

log = logging.getLogger(__name__)
OVERFIT_MARGIN = 0.1  # nats above the lowest possible loss that debug=overfit still calls memorised
OVERFITTING_WARNING = 0.02  # nats by which the final dev loss may exceed the best before the run warns


def train(cfg: DictConfig) -> float:
    """Run one job in Hydra's run directory and return its final dev loss, the value a sweeper minimises.

    A single run's config was checked, and for rerun=/resume= replaced by the saved one, before Hydra wrote
    anything (makemore.record.RunRecord); a sweep member is checked here, in its own new directory. How a run
    that stops early ends (its status, its exit code) is makemore.cli.settle_stopped_run's.
    """
    timeline.mark("composed")
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    sweep_dir = Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None
    if sweep_dir:
        die_with_the_sweep()  # a launcher's worker process (joblib's, submitit's local ones) ends with its sweep
    try:
        return train_or_continue(cfg, run_dir, sweep_dir, hydra.sweeper if sweep_dir else None)
    except Exception as error:
        return settle_stopped_run(error, run_dir, sweep_dir)


def train_or_continue(
    cfg: DictConfig, run_dir: Path, sweep_dir: Path | None, sweeper: DictConfig | None = None
) -> float:
    """A single run, or a member of the sweep in `sweep_dir` (`sweeper`: its hydra.sweeper config); its final dev
    loss."""
    if sweep_dir:
        kept, resume = sweep_member(cfg, run_dir, sweep_dir)
        if kept is not None:
            return kept
    else:
        resume = load_checkpoint(run_dir / CHECKPOINT, {"optimizer", "state"}) if cfg.get("resume") else None
    with lock.holding(run_dir):  # a single run's process holds it from its checks on (makemore.record)
        metrics = train_run(cfg, run_dir, resume, reporter_for(cfg, sweeper, sweep_dir))
    if not sweep_dir and writes_tensorboard(cfg.logger):  # a sweep refreshes its view once, at its end
        refresh_dashboard(dashboard_root(run_dir), [run_dir])
        timeline.mark("dashboard")
    return math.inf if metrics["dev_loss"] is None else metrics["dev_loss"]


def reporter_for(cfg: DictConfig, sweeper: DictConfig | None, sweep_dir: Path | None):
    """What a sweep member reports its evaluations to: its Optuna trial's pruner, which judges the weights'
    moving average where the run keeps one (makemore.weight_average); None outside a search."""
    return trial_reporter(cfg.get("trial"), sweeper, sweep_dir, cfg.seed, JUDGED if cfg.ema_decay else "dev")


def sweep_member(cfg: DictConfig, run_dir: Path, sweep_dir: Path) -> tuple[float | None, dict | None]:
    """A sweep member before it trains: its kept result if it ended in an earlier session of the sweep, else None
    and its checkpoint if it was interrupted (it continues from it)."""
    if cfg.get("resume") or cfg.get("rerun"):
        raise MakemoreError("rerun= and resume= take one run at a time; drop -m")
    kept = ended_member(run_dir)
    if kept is not None:
        return kept, None
    checkpoint = run_dir / CHECKPOINT
    return None, load_checkpoint(checkpoint, {"optimizer", "state"}) if checkpoint.is_file() else None


def ended_member(run_dir: Path) -> float | None:
    """The result of a sweep member that already ended (ok, failed, diverged or pruned), or None to (re)run it."""
    metrics = ended_metrics(run_dir)
    if metrics is None:
        return None
    print(f"{run_dir.name}: ended earlier ({metrics.get('status')}), kept as it is")
    dev = metrics.get("dev_loss") if metrics.get("status") == "ok" else None
    return math.inf if dev is None else dev


def train_in_process(*overrides: str) -> dict:
    """Run `python train.py <overrides>` in-process, in a throwaway directory; return its metrics (for experiments)."""
    with tempfile.TemporaryDirectory() as tmp:
        return train_run(compose_train_config(*overrides), Path(tmp))


@dataclass
class Run:
    """A run between its start and its end. `start` checks it and builds it (data, model at its seed's initial
    weights, provenance, loggers); the training loop trains it, alone (`train_alone`) or as a member of a population
    (makemore.population); `finish` evaluates it and writes its record."""

    cfg: DictConfig
    run_dir: Path
    data: RunData
    model: nn.Module
    params: int
    config: dict  # the resolved config, as model.pt and every checkpoint carry it
    provenance: dict  # where its code, data and environment came from (makemore.provenance)
    hparams: dict
    loggers: Loggers
    ids: dict  # the logger ids a resumed run logs into again (W&B's run id)
    rng: torch.Tensor  # the global generator's state once the model was built: what training starts from
    pictures: PictureProcess | None = None  # where the model's pictures are drawn while it trains (a run alone)

    @property
    def trained_by_counting(self) -> bool:
        return getattr(self.model, "trained_by_counting", False)

    def close(self) -> None:
        """Its loggers closed and its picture process ended, however the run ends."""
        try:
            self.loggers.close()
        finally:
            if self.pictures:
                self.pictures.close()

    @property
    def checkpoint_context(self) -> dict:
        """What every checkpoint carries besides the training state."""
        return {"vocab": list(self.data.dataset.vocab.chars), "config": self.config, "ids": self.ids}


@dataclass
class RunData:
    """A run's data as it trains on it: the items, the split and its example tensors on the device (windows, or
    whole items: `rows_per_batch` then counts the items a batch draws). Runs that share their data share one."""

    items: list[str]
    dataset: Dataset
    X: dict
    Y: dict
    rows_per_batch: int | None


def train_run(cfg: DictConfig, run_dir: Path, resume: dict | None = None, on_eval=None) -> dict:
    """Train (or continue from the checkpoint `resume`), evaluate on every split, write the run directory.
    `on_eval(step, dev_loss, train_seconds)`: see makemore.loop.fit (an Optuna trial's pruning).

    Returns metrics.json's contents.
    """
    job = start(cfg, run_dir, resume, alone=True)
    try:
        state = train_alone(job, resume, on_eval)
    except BaseException:
        job.close()
        raise
    return conclude(job, state)


def start(
    cfg: DictConfig, run_dir: Path, resume: dict | None = None, shared: dict | None = None, alone: bool = False
) -> Run:
    """Everything before the first step: the checks, the data, the model at its seed's initial weights, the
    provenance (or, resumed, the check that its data is the same) and the loggers. `shared`: data already read
    and cut, by its key (run_data), for runs that train together. `alone`: a run that trains by itself, whose
    pictures a process of their own draws (makemore.pictures)."""
    cfg, items, vocab = prepare(cfg, known_data(shared, cfg))
    timeline.mark("validated")
    if resume and tuple(resume["vocab"]) != vocab.chars:
        raise MakemoreError(
            f"the checkpoint's vocabulary differs from the data in {cfg.data.path}; resume with the same data"
        )
    device = pick_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, vocab.size).to(device)
    rng = torch.get_rng_state()
    data = run_data(cfg, items, vocab, model, device, shared)
    timeline.mark("data and model")
    params = sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
    config = OmegaConf.to_container(cfg, resolve=True)
    facts, patch = provenance.collect(cfg.model._target_, cfg.data.path, items, data.dataset, str(device), cfg.threads)
    if resume:  # a resumed run keeps the provenance it started with; its data must be the same (or accepted)
        provenance.refuse_changed_data("resume", run_dir, cfg.data.path, items, cfg.use_current_data)
    else:
        provenance.write(run_dir, facts, patch)
    log.info(
        "%s: %s parameters, %s tokens, %s train examples",
        cfg.model.name,
        f"{params:,}",
        vocab.size,
        f"{len(data.dataset.Y['train']):,}",
    )
    if data.Y["train"].dim() == 2:
        log.info(
            "training and evaluating on whole items, a loss at every position: %s train items, %s a batch",
            f"{len(data.Y['train']):,}",
            data.rows_per_batch or "all",
        )
    ids = resume["ids"] if resume else {"run": secrets.token_hex(4)}  # a resumed run logs into the same runs
    hparams = experiment_hparams(config, trained_by_counting=getattr(model, "trained_by_counting", False))
    resumed_at = resume["state"]["step"] if resume else None
    sweep = run_dir.parent.name if (run_dir.parent / SWEEP_RECORD).is_file() else None
    run_id = ids.get("run") or ids["wandb"]  # checkpoints before the logger sections named it for W&B
    about = RunInfo(run_dir, run_dir.name, sweep, hparams, facts, run_id, resumed_at)
    drawn_apart = alone and cfg.logger and may_fork(device, cfg.threads)  # forked before the loggers' threads start
    picture_process = PictureProcess(model, vocab, run_dir / MODEL) if drawn_apart else None
    loggers = build_loggers(config["logger"], about)
    loggers.text("provenance", provenance.markdown(facts), resumed_at or 0)
    timeline.mark("provenance and loggers")
    return Run(cfg, run_dir, data, model, params, config, facts, hparams, loggers, ids, rng, picture_process)


def train_alone(job: Run, resume: dict | None, on_eval=None) -> TrainState:
    """The run's model trained on its own: counted, or in the training loop as its population of one."""
    if job.trained_by_counting:
        log.info("trained by counting the train split: no optimizer steps")
        begin = time.perf_counter()
        job.model.fit(job.data.X["train"], job.data.Y["train"])
        return TrainState(train_seconds=time.perf_counter() - begin)
    data = job.data
    return fit(member_of(job, resume, on_eval), data.X, data.Y, data.rows_per_batch)


def member_of(job: Run, resume: dict | None, on_eval=None, finish=None) -> Member:
    """The run as a member of the training loop: its model at its start (or at `resume`, its checkpoint), its
    typed settings, its optimizer's and schedule's sections, where it logs and saves. `finish(state, losses)`: what
    the loop calls when it ends (makemore.loop.Member)."""
    cfg = job.cfg
    return Member(
        job.model,
        run_settings(cfg),
        cfg.optim,
        cfg.schedule,
        job.loggers,
        job.run_dir,
        job.checkpoint_context,
        resume,
        on_eval,
        job.rng,
        finish,
    )


def conclude(job: Run, state: TrainState, losses: dict | None = None) -> dict:
    """A run's end once it trained: its outputs (`finish`), its loggers closed, its last lines printed (above a
    population's progress bar). Returns metrics.json's contents."""
    try:
        metrics = finish(job, state, losses)
    finally:
        job.close()
    timeline.mark("figures and loggers closed")
    with tqdm.external_write_mode():
        report_end(job.cfg, metrics)
    return metrics


def finish(job: Run, state: TrainState, losses: dict | None = None) -> dict:
    """The final evaluation on every split (or `losses`, computed for several runs at once, with the seconds they
    took in state.eval_seconds), the metrics, samples and outputs, and the last logs. Returns metrics.json's
    contents; the caller closes the loggers."""
    cfg, model, data = job.cfg, job.model, job.data
    if losses is None:
        begin = time.perf_counter()
        losses = {split: loss_on(model, data.X[split], data.Y[split], data.dataset.vocab.size) for split in SPLITS}
        state.eval_seconds += time.perf_counter() - begin  # the final evaluation counts too
    timeline.mark("final evaluation")
    if state.history and state.step == cfg.steps:  # the last row holds the final evaluation's dev loss
        state.history[-1]["loss/dev"] = losses["dev"]
    metrics = final_metrics(cfg, state, losses, job.params, data.rows_per_batch)
    if cfg.overfit_batch:
        metrics["overfit"] = overfit_verdict(data.X["train"], data.Y["train"], losses["train"], job.trained_by_counting)
    if cfg.rerun:
        metrics["reproduced"], metrics["rerun_verdict"] = provenance.verdict(Path(cfg.rerun), job.provenance, metrics)
    samples = generate(model, data.dataset.vocab, cfg.model.block_size, cfg.samples, seed=cfg.seed)
    write_outputs(job.run_dir, model, data.dataset, job.config, metrics, samples, state.history)
    timeline.mark("samples and outputs")
    log_final(job, metrics, samples)
    if metrics["target"] is not None and job.loggers.backends:
        curve = [(row["step"], row["loss/dev"]) for row in state.history if row.get("loss/dev") is not None]
        job.loggers.target_line(metrics["target"], curve or [(metrics["steps"], losses["dev"])])
    return metrics


def data_key(cfg: DictConfig) -> tuple:
    """What decides a run's data tensors: the file, its split, the context and the batch's rows."""
    data = cfg.data
    return (
        data.path,
        data.boundary,
        tuple(data.fractions),
        data.seed,
        cfg.model.block_size,
        cfg.device,
        cfg.batch_size,
    )


def known_data(shared: dict | None, cfg: DictConfig) -> tuple[list[str], Vocab] | None:
    """The items and vocabulary of the data a run of `shared` already read and checked, if any."""
    key = data_key(cfg)
    if shared is None or key not in shared:
        return None
    return shared[key].items, shared[key].dataset.vocab


def run_data(
    cfg: DictConfig, items: list[str], vocab: Vocab, model: nn.Module, device: torch.device, shared: dict | None
) -> RunData:
    """The split and its example tensors, from `shared` when a run of the same data key built them."""
    key = data_key(cfg)
    if shared is not None and key in shared and not cfg.overfit_batch:
        return shared[key]
    dataset = make_dataset(items, vocab, cfg.model.block_size, tuple(cfg.data.fractions), cfg.data.seed)
    X, Y, rows_per_batch = training_tensors(model, dataset, cfg, device)
    data = RunData(items, dataset, X, Y, rows_per_batch)
    if shared is not None and not cfg.overfit_batch:
        shared[key] = data
    return data


def training_tensors(
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
        **({"stopped_at_target": state.step} if state.stopped_at_target else {}),
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


def overfit_verdict(X: torch.Tensor, Y: torch.Tensor, loss: float, trained_by_counting: bool) -> dict:
    """debug=overfit: the loss on the one batch against the lowest any model can reach on it."""
    if trained_by_counting:
        return {"verdict": "not applicable: a counting model takes no gradient steps"}
    floor = lowest_possible_loss(X, Y)
    return {"loss": loss, "floor": floor, "verdict": "pass" if loss <= floor + OVERFIT_MARGIN else "fail"}


def report_end(cfg: DictConfig, metrics: dict) -> None:
    """The last lines: the losses and the target, early stopping, the overfit verdict or an overfitting warning, and
    a rerun's verdict."""
    losses = {split: metrics[f"{split}_loss"] for split in SPLITS}
    losses = {split: math.inf if loss is None else loss for split, loss in losses.items()}
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
    if "stopped_at_target" in metrics:
        print(
            f"stop_at_target: dev went below {cfg.target} at step {metrics['stopped_at_target']:,}, "
            f"after {metrics['seconds_to_target']:.1f} s of training; stopped there"
        )
    if cfg.overfit_batch:
        check_overfit(metrics["overfit"], cfg.overfit_batch)
    elif best_dev is not None and losses["dev"] > best_dev + OVERFITTING_WARNING:
        print(
            f"warning: overfitting: dev loss was {best_dev:.4f} at step {best_step:,} and ended at "
            f"{losses['dev']:.4f}; try fewer steps (steps={best_step}), model.dropout, optim.weight_decay, "
            f"or early_stopping=<evaluations> (it keeps the best weights)"
        )
    if cfg.rerun:
        print(f"rerun verdict: {metrics['rerun_verdict']}")


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
        columns = ["step", "loss/train", "loss/dev", "lr"] + [AVERAGE_DEV] * any(AVERAGE_DEV in row for row in history)
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    write_json(run_dir / METRICS, metrics)


def log_final(job: Run, metrics: dict, samples: list[str]) -> None:
    """The final metrics beside the HParams (losses on the full splits, makemore.metrics), samples, the model's
    pictures."""
    loggers = job.loggers
    if not loggers.backends:  # logger=none: don't draw pictures nobody receives
        return
    step = metrics["steps"]
    loggers.summary(job.hparams, final_summary(metrics), step)  # run/ metrics: one chart group, after loss/
    loggers.text("samples", "\n".join(samples), step)
    for tag, image in pictures.draw(job.model, job.data.dataset.vocab, job.pictures).items():
        loggers.image(tag, image, step)
