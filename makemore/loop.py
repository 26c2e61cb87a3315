"""The gradient-descent loop: minibatches, schedule, logging points, divergence, checkpoints and signals."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from makemore.backprop import ManualBackward
from makemore.checkpoint import save_atomic
from makemore.cli import train_command
from makemore.errors import MakemoreError
from makemore.loggers import Loggers
from makemore.models import loss_on, predict
from makemore.optim import build_optimizer, is_plain_sgd, plain_step
from makemore.search import Pruned

BATCH_CHUNK = 1000  # steps of batch indices drawn per randint call
CHECKPOINT = "checkpoint.pt"


class Diverged(MakemoreError):
    """The loss became NaN or infinite."""


class Interrupted(MakemoreError):
    """SIGINT or SIGTERM arrived; a checkpoint was written first."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@contextmanager
def stop_requests():
    """While training, Ctrl-C and SIGTERM (SLURM's pre-emption) only set a flag the loop checks after each step."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {s: signal.signal(s, lambda signum, frame: requested.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, handler in previous.items():
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
        hand = ManualBackward(model, batch_size, smoothing)
        if is_plain_sgd(optimizer):
            return hand.sgd_step

        def manual_step(xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
            loss = hand.gradients(xb, yb)
            optimizer.step()  # the lr is already in the param groups
            return loss

        return manual_step
    optimizer_step = plain_step(optimizer)
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


def fit(
    model: nn.Module, X: dict, Y: dict, cfg: DictConfig, loggers: Loggers, run_dir: Path, extra: dict, resume: dict | None,
    on_eval: Callable[[int, float], None] | None = None, rows_per_batch: int | None = None,
) -> tuple[dict, list[dict]]:
    """Train for cfg.steps, continuing from `resume` (a checkpoint) if given; return timing figures and history.

    The host reads the loss only at log points, never per step: a per-step .item() would stall every step.
    `extra` is stored in every checkpoint (vocabulary, config, logger ids). `on_eval(step, dev_loss)` is called
    at every dev evaluation (an Optuna trial's report; it raises Pruned to stop the run). `rows_per_batch` replaces
    cfg.batch_size as the rows of X drawn per step (whole items, for cfg.batch_size next characters).
    """
    steps, seed, target, smoothing = cfg.steps, cfg.seed, cfg.target, cfg.label_smoothing
    batch_size = rows_per_batch or cfg.batch_size
    ceiling = cfg.diverge_above  # a finite loss this high is divergence too (lecture 2's randn start is ~27 nats)
    log_every, eval_every, save_every = cfg.log_interval, cfg.eval_interval, cfg.checkpoint_interval
    optimizer, lr_at = build_optimizer(model, cfg.optim, cfg.schedule, steps)
    X_train, Y_train, n_train, device = X["train"], Y["train"], len(Y["train"]), X["train"].device
    train_step = step_function(model, optimizer, n_train if batch_size is None else batch_size, smoothing)
    vocab_size = len(extra["vocab"])
    step_losses = torch.zeros(steps, device=device)
    patience = cfg.early_stopping  # evaluations without a better dev loss before stopping; 0: never stop early
    state = {"step": 0, "history": [], "train_seconds": 0.0, "eval_seconds": 0.0, "dev_loss": math.nan, "reached": {},
             "best": {"dev_loss": math.inf, "step": 0, "stale": 0}}
    best_weights = None  # with early stopping: a copy of the weights at the best dev loss, restored at the stop
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["rng"])
        state = {**state, **resume["state"]}
        best_weights = resume.get("best_model")
        step_losses[state["step"] - len(resume["window"]) : state["step"]] = resume["window"].to(device)
    groups = optimizer.param_groups  # only now: load_state_dict replaces the group dicts

    def save_checkpoint(done: int) -> None:
        window = step_losses[done - (done % log_every) : done].cpu()  # the current, unfinished log window
        save_atomic({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(), "window": window,
            "state": {**state, "step": done, "train_seconds": state["train_seconds"] + time.perf_counter() - start},
            **({"best_model": best_weights} if best_weights is not None else {}), **extra,
        }, run_dir / CHECKPOINT)

    first = state["step"]
    bar = tqdm(total=steps, initial=first, disable=not cfg.progress, unit="step", dynamic_ncols=True, mininterval=0.5)
    model.train()
    start = time.perf_counter()
    with stop_requests() as stop:
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
            done = step + 1
            if done % log_every == 0 or done == steps:
                train_loss = step_losses[done - 1 - (done - 1) % log_every : done].mean().item()
                if not math.isfinite(train_loss) or (ceiling is not None and train_loss > ceiling):
                    bar.close()
                    what = (f"became {train_loss}" if not math.isfinite(train_loss)
                            else f"reached {train_loss:.4g}, above diverge_above={ceiling:g},")
                    raise Diverged(f"loss {what} by step {done} (lr {lr:g}); "
                                   "the learning rate is likely too high: lower optim.lr")
                values = {"loss/train": train_loss, "lr": lr}
                if done % eval_every == 0 and done < steps:  # the last step is evaluated on every split after
                    eval_start = time.perf_counter()
                    state["dev_loss"] = values["loss/dev"] = loss_on(model, X["dev"], Y["dev"], vocab_size)
                    state["eval_seconds"] += time.perf_counter() - eval_start
                    best = state["best"]
                    if state["dev_loss"] < best["dev_loss"]:
                        best.update(dev_loss=state["dev_loss"], step=done, stale=0)
                        if patience:
                            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        best["stale"] += 1
                    if target is not None and state["dev_loss"] < target and not state["reached"]:
                        state["reached"] = {
                            "step_to_target": done,
                            "seconds_to_target": state["train_seconds"] + time.perf_counter() - start,
                            "target_reached_at": time.time(),
                        }
                    if on_eval:
                        try:
                            on_eval(done, state["dev_loss"])
                        except Pruned as e:
                            bar.close()
                            e.train_seconds = state["train_seconds"] + time.perf_counter() - start
                            raise
                loggers.scalars(done, values if done < steps else {"lr": lr})  # the full splits give the last losses
                state["history"].append({"step": done, **values})
                bar.set_postfix(train=f"{train_loss:.4f}", dev=f"{state['dev_loss']:.4f}", refresh=False)
                bar.update(done - bar.n)
            if save_every and done % save_every == 0 and done < steps:  # any step: it saves the unlogged window too
                save_checkpoint(done)
            if stop:
                save_checkpoint(done)
                bar.close()
                name = signal.Signals(stop[0]).name
                raise Interrupted(f"{name} at step {done}: checkpoint saved; continue with "
                                  f"{train_command('resume', run_dir)}", stop[0])
            if patience and state["best"]["stale"] >= patience:
                break
    bar.close()
    state["train_seconds"] += time.perf_counter() - start
    timing = {"steps": state["history"][-1]["step"] if state["history"] else first, "train_seconds": state["train_seconds"],
              "eval_seconds": state["eval_seconds"], **state["reached"],
              "best": {k: state["best"][k] for k in ("dev_loss", "step")}}
    if patience and state["best"]["stale"] >= patience:
        model.load_state_dict(best_weights)
        timing["early_stopped_at"] = timing["steps"]
        timing["weights"] = f"best dev, step {state['best']['step']} (restored by early_stopping)"
    return timing, state["history"]
