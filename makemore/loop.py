"""The gradient-descent loop: minibatches, schedule, logging points, divergence, checkpoints and signals."""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from makemore.backprop import ManualBackward
from makemore.checkpoint import save_atomic
from makemore.errors import MakemoreError
from makemore.loggers import Loggers
from makemore.models import loss_on, predict
from makemore.optim import build_optimizer, fused_step, is_plain_sgd
from makemore.rundir import CHECKPOINT
from makemore.settings import Settings
from makemore.weight_average import AVERAGE, AVERAGE_DEV, WeightAverage

BATCH_CHUNK = 1000  # steps of batch indices drawn per randint call


class Diverged(MakemoreError):
    """The loss became NaN or infinite."""


class Interrupted(MakemoreError):
    """SIGINT, SIGTERM or SIGUSR2 (a scheduler's timeout warning) arrived; a checkpoint was written first.
    `scheduler`: the handler the signal had before training (submitit's requeue), to call now that it is saved."""

    def __init__(self, signum: int, step: int, scheduler: Callable | None = None):
        super().__init__(f"{signal.Signals(signum).name} at step {step}: checkpoint saved")
        self.signum, self.step, self.scheduler = signum, step, scheduler


class StopRequests(list):
    """The signals that arrived while training, and the handlers they had before (a scheduler's own)."""

    previous: dict


@dataclass
class Best:
    """The best dev loss of the evaluations so far, its step, and the evaluations since without a better one."""

    dev_loss: float = math.inf
    step: int = 0
    stale: int = 0


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint (as plain dicts), so a resumed run continues exactly."""

    step: int = 0
    history: list[dict] = field(default_factory=list)  # a row per log or evaluation point
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    dev_loss: float = math.nan  # the last evaluation's
    reached: dict = field(default_factory=dict)  # step_to_target, seconds_to_target, target_reached_at
    stopped_at_target: bool = False  # stop_at_target ended it at its first evaluation below the target
    best: Best = field(default_factory=Best)
    early_stopped: bool = False

    @classmethod
    def restored(cls, saved: dict) -> TrainState:
        return cls(**{**saved, "best": Best(**saved["best"])})

    def saved(self) -> dict:
        return dataclasses.asdict(self)


# Ctrl-C, SIGTERM (SLURM's pre-emption) and SIGUSR2 (submitit's warning before a timeout), where the OS has them.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, name))


@contextmanager
def stop_requests():
    """While training, a stop signal only sets a flag the loop checks after each step: it saves a checkpoint
    first, then stops (and hands a scheduler's signal on to the scheduler's own handler:
    makemore.cli.settle_stopped_run)."""
    requested = StopRequests()
    requested.previous = {}
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    requested.previous = {s: signal.signal(s, lambda signum, frame: requested.append(signum)) for s in STOP_SIGNALS}
    try:
        yield requested
    finally:
        for s, handler in requested.previous.items():
            signal.signal(s, handler)


def batch_indices(seed: int, chunk: int, n: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """Indices for BATCH_CHUNK steps at once; they depend only on (seed, chunk), so a resumed run draws the same."""
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + chunk)
    return torch.randint(n, (BATCH_CHUNK, batch_size), generator=generator, device=device)


def step_function(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch_size: int, smoothing: float
) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """One training step on a batch at a learning rate, returning its loss: autograd's, or for an MLP with
    model.backward=manual lecture 4's hand-derived backward pass (fused into the update for plain SGD)."""
    if getattr(model, "manual_backward", False):
        manual = ManualBackward(model, batch_size, smoothing)
        if is_plain_sgd(optimizer):
            return manual.sgd_step

        optimizer_step = fused_step(optimizer)

        def manual_step(xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
            loss = manual.gradients(xb, yb)
            optimizer_step()  # the lr is already in the param groups
            return loss

        return manual_step
    optimizer_step = fused_step(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def autograd_step(xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
        logits, targets = predict(model, xb, yb)
        loss = F.cross_entropy(logits, targets, ignore_index=-1, label_smoothing=smoothing)
        for p in params:  # what zero_grad(set_to_none=True) does, at a tenth of its per-step overhead
            p.grad = None
        loss.backward()
        optimizer_step()
        return loss.detach()

    return autograd_step


def evaluate(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    vocab_size: int,
    state: TrainState,
    target: float | None,
    elapsed: float,
) -> bool:
    """The dev loss at state.step, kept as the last, the best and the first below the target; True if it is a new best.
    `elapsed`: training seconds up to this evaluation."""
    return record_evaluation(state, timed_loss(model, X, Y, vocab_size, state), target, elapsed)


def timed_loss(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, vocab_size: int, state: TrainState) -> float:
    """The model's loss on a split, its time counted in state.eval_seconds."""
    start = time.perf_counter()
    loss = loss_on(model, X, Y, vocab_size)
    state.eval_seconds += time.perf_counter() - start
    return loss


def record_evaluation(state: TrainState, dev_loss: float, target: float | None, elapsed: float) -> bool:
    """Keep an evaluation's dev loss as the last, the best and the first below the target; True if it is a new best."""
    state.dev_loss = dev_loss
    if target is not None and state.dev_loss < target and not state.reached:
        state.reached = {"step_to_target": state.step, "seconds_to_target": elapsed, "target_reached_at": time.time()}
    if state.dev_loss < state.best.dev_loss:
        state.best = Best(state.dev_loss, state.step)
        return True
    state.best.stale += 1
    return False


def checkpoint(weights: dict, optimizer: dict, rng: torch.Tensor, window: torch.Tensor, state: TrainState) -> dict:
    """The training state a checkpoint holds (with the run's `checkpoint_context`): resume continues from it exactly."""
    return {"model": weights, "optimizer": optimizer, "rng": rng, "window": window.cpu(), "state": state.saved()}


def diverged(train_loss: float, ceiling: float | None, step: int, lr: float) -> Diverged | None:
    """The error that stops a run whose log window's mean loss is NaN, infinite or above `ceiling`; else None."""
    if math.isfinite(train_loss) and (ceiling is None or train_loss <= ceiling):
        return None
    what = (
        f"became {train_loss}"
        if not math.isfinite(train_loss)
        else f"reached {train_loss:.4g}, above diverge_above={ceiling:g},"
    )
    return Diverged(f"loss {what} by step {step} (lr {lr:g}); the learning rate is likely too high: lower optim.lr")


def fit(
    model: nn.Module,
    X: dict,
    Y: dict,
    settings: Settings,
    optim: DictConfig,
    schedule: DictConfig,
    loggers: Loggers,
    run_dir: Path,
    checkpoint_context: dict,
    resume: dict | None,
    on_eval: Callable[[int, float, float], None] | None = None,
    rows_per_batch: int | None = None,
) -> TrainState:
    """Train for settings.steps with the `optim` and `schedule` sections' optimizer, continuing from `resume` (a
    checkpoint) if given; return where training ended.

    The train loss is logged every log_interval steps and dev is evaluated every eval_interval steps (the last
    step is left to the caller, which evaluates every split). The host reads the loss only at log points, never
    per step: a per-step .item() would stall every step. `checkpoint_context` is stored in every checkpoint (vocabulary,
    config, logger ids). `on_eval(step, dev_loss, train_seconds)` is called at every dev evaluation; it may raise
    to stop the run (an Optuna trial's pruning). `rows_per_batch` replaces settings.batch_size as the rows of X
    drawn per step (whole items, for settings.batch_size next characters).
    """
    steps, seed = settings.steps, settings.seed
    batch_size = rows_per_batch or settings.batch_size
    log_every, eval_every, save_every = settings.log_interval, settings.eval_interval, settings.checkpoint_interval
    optimizer, lr_at = build_optimizer(model, optim, schedule, steps)
    X_train, Y_train, n_train, device = X["train"], Y["train"], len(Y["train"]), X["train"].device
    rows = n_train if batch_size is None else batch_size
    train_step = step_function(model, optimizer, rows, settings.label_smoothing)
    vocab_size = len(checkpoint_context["vocab"])
    step_losses = torch.zeros(steps, device=device)
    patience = settings.early_stopping  # evaluations without a better dev loss before stopping; 0: never stop early
    state, best_weights = TrainState(), None  # best_weights: with early stopping, the weights at the best dev loss
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["rng"])
        state = TrainState.restored(resume["state"])
        best_weights = resume.get("best_model")
        step_losses[state.step - len(resume["window"]) : state.step] = resume["window"].to(device)
    average = WeightAverage(model, settings.ema_decay, (resume or {}).get(AVERAGE)) if settings.ema_decay else None
    groups = optimizer.param_groups  # only now: load_state_dict replaces the group dicts
    first, start = state.step, time.perf_counter()
    earlier_seconds = state.train_seconds  # of the sessions before a resume

    def elapsed() -> float:
        return earlier_seconds + time.perf_counter() - start

    def save_checkpoint() -> None:
        window = step_losses[state.step - (state.step % log_every) : state.step]  # the unfinished log window
        training = dataclasses.replace(state, train_seconds=elapsed())
        saved = checkpoint(model.state_dict(), optimizer.state_dict(), torch.get_rng_state(), window, training)
        if best_weights is not None:
            saved["best_model"] = best_weights
        if average:
            saved[AVERAGE] = average.saved()
        save_atomic({**saved, **checkpoint_context}, run_dir / CHECKPOINT)

    shown = settings.progress
    bar = tqdm(total=steps, initial=first, disable=not shown, unit="step", dynamic_ncols=True, mininterval=0.5)
    model.train()
    train_loss = math.nan  # the last log window's, for the progress bar
    with stop_requests() as stop, bar:
        for step in range(first, steps):
            if batch_size is None:
                xb, yb = X_train, Y_train
            else:
                if step % BATCH_CHUNK == 0 or step == first:  # gather a chunk of batches at once; a step takes a view
                    batches = batch_indices(seed, step // BATCH_CHUNK, n_train, batch_size, device)
                    chunk_X, chunk_Y = X_train[batches], Y_train[batches]
                xb, yb = chunk_X[step % BATCH_CHUNK], chunk_Y[step % BATCH_CHUNK]
            lr = lr_at(step)
            for group in groups:
                group["lr"] = lr
            step_losses[step] = train_step(xb, yb, lr)
            if average:
                average.update()
            state.step = done = step + 1
            row = {}
            if done % log_every == 0 or done == steps:
                train_loss = step_losses[done - 1 - (done - 1) % log_every : done].mean().item()
                error = diverged(train_loss, settings.diverge_above, done, lr)
                if error:
                    raise error
                row = {"loss/train": train_loss, "lr": lr}
            if done % eval_every == 0 and done < steps:  # the last step is evaluated on every split after
                if evaluate(model, X["dev"], Y["dev"], vocab_size, state, settings.target, elapsed()) and patience:
                    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                row = {**row, "loss/dev": state.dev_loss, "lr": lr}
                if average:
                    row[AVERAGE_DEV] = timed_loss(average.model, X["dev"], Y["dev"], vocab_size, state)
                if on_eval:  # it judges the average where there is one (makemore/weight_average.py)
                    on_eval(done, row.get(AVERAGE_DEV, state.dev_loss), elapsed())
            if row:
                loggers.scalars(done, row if done < steps else {"lr": lr})  # the full splits give the last losses
                state.history.append({"step": done, **row})
                bar.postfix = f"dev={state.dev_loss:.4f}, train={train_loss:.4f}"  # drawn by the update below
                bar.update(done - bar.n)
            if save_every and done % save_every == 0 and done < steps:  # any step: it saves the unlogged window too
                save_checkpoint()
            if stop:
                save_checkpoint()
                handler = stop.previous.get(stop[0])  # submitit's, for SIGUSR2 in one of its jobs
                scheduled = callable(handler) and stop[0] not in (signal.SIGINT, signal.SIGTERM)
                raise Interrupted(stop[0], done, handler if scheduled else None)
            if patience and state.best.stale >= patience:
                state.early_stopped = True
                model.load_state_dict(best_weights)
                break
            if settings.stop_at_target and state.reached:
                state.stopped_at_target = True
                break
    state.train_seconds = elapsed()
    return state
