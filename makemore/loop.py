"""The training loop, the one every run trains in: K members stepped together, each on its own batches at its
own learning rate. A run alone is K = 1 (makemore.solo: its model, through autograd or lecture 4's backward pass);
a population's members are K > 1 (makemore.stacked's engines, makemore.optimizers.stacked). What is decided at
each point is written once, for every member: log, evaluate, keep the best weights, diverge, prune, stop early,
stop at the target, checkpoint, stop on a signal; the training features (makemore.features: the weight average)
act at each step and point alike.
"""

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
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from makemore import timeline
from makemore.checkpoint import save_atomic
from makemore.data import SPLITS
from makemore.errors import MakemoreError
from makemore.features import Feature
from makemore.loggers import Loggers
from makemore.optimizers import build_optimizer, family_of
from makemore.optimizers.stacked import StackedOptimizer
from makemore.rundir import CHECKPOINT
from makemore.settings import Settings
from makemore.solo import solo
from makemore.stacked import Evaluation, StackedEngine, engine_for
from makemore.weight_average import WeightAverage

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


# The training features a loop builds, each for the members that ask for it (makemore.features).
FEATURES: list[type[Feature]] = [WeightAverage]


@dataclass
class Tally:
    """How the members ended so far and the best dev loss: what a population's progress bar says."""

    running: int = 0
    finished: int = 0
    diverged: int = 0
    stopped: int = 0  # pruned, failed, interrupted
    best_dev: float = math.inf

    def line(self) -> str:
        best = f", best dev {self.best_dev:.4f}" if math.isfinite(self.best_dev) else ""
        return (
            f"running {self.running}, finished {self.finished}, diverged {self.diverged}, stopped {self.stopped}{best}"
        )


Progress = Callable[[int, Tally], None]  # (steps done, tally) at every point


@dataclass
class Member:
    """One member of a loop: a run's side of training. Its `model` holds its weights whenever they are read out
    (a stacked member's are copied into it); its settings decide its steps; `finish(state, losses)` writes its
    outputs when it ends and is its outcome (None: the loop's caller finishes it; `losses`: its final losses
    computed with the others', or None to compute its own)."""

    model: nn.Module
    settings: Settings
    optim: Any  # its `optim` section
    schedule: Any  # its `schedule` section
    loggers: Loggers
    run_dir: Path
    checkpoint_context: dict  # what every checkpoint carries besides the training state (vocabulary, config, ids)
    resume: dict | None = None  # the checkpoint it continues from
    on_eval: Callable[[int, float, float], None] | None = None  # (step, dev loss judged, train seconds); may raise
    rng: torch.Tensor | None = None  # the global generator's state it starts from (None: as it is now)
    finish: Callable[[TrainState, dict | None], Any] | None = None
    state: TrainState = field(default_factory=TrainState)
    best_weights: dict | None = None  # with early_stopping: the weights at the best dev loss
    train_loss: float = math.nan  # its last log window's

    def __post_init__(self) -> None:
        self.optimizer, self.lr_at = build_optimizer(self.model, self.optim, self.schedule, self.settings.steps)
        self.family = family_of(self.optim)
        self.window = torch.zeros(0)  # a resumed run's unfinished log window of step losses
        if self.resume:
            self.model.load_state_dict(self.resume["model"])
            self.optimizer.load_state_dict(self.resume["optimizer"])
            self.state = TrainState.restored(self.resume["state"])
            self.best_weights, self.window = self.resume.get("best_model"), self.resume["window"]
            self.rng = self.resume["rng"]
        self.rng = torch.get_rng_state() if self.rng is None else self.rng
        self.seconds = self.state.train_seconds  # its training seconds before this session
        self.lr_key = (self.optim.lr, self.settings.steps, *sorted(self.schedule.items()))  # equal: same lr each step


class Loop:
    """Members trained together from their common step on one engine and optimizer (stacked, or a run alone's),
    with the features they ask for: where each stands, and what is decided at each step and point."""

    def __init__(self, members: list[Member], X: dict, Y: dict, vocab_size: int, batch: int | None, stacked: bool):
        self.members, self.X, self.Y, self.batch = members, X, Y, batch
        self.evaluation = Evaluation(X, Y, vocab_size)
        settings, models, family = members[0].settings, [m.model for m in members], members[0].family
        if stacked:
            self.engine: StackedEngine = engine_for(models, Y["train"].dim() == 2)
            self.optimizer = StackedOptimizer(self.engine, [m.optimizer for m in members], models, family)
            for k, m in enumerate(members):
                if m.resume:
                    self.optimizer.load_from(k, m.optimizer, m.model)
        else:
            [alone] = members
            torch.set_rng_state(alone.rng)  # what a model that draws random numbers (dropout) draws from
            rows = len(Y["train"]) if batch is None else batch
            self.engine, self.optimizer = solo(alone.model, alone.optimizer, family, rows, settings.label_smoothing)
        torch.set_num_threads(settings.threads)  # the members' own (their solo runs'): kernels sum by thread
        self.first, self.last = members[0].state.step, max(m.settings.steps for m in members)
        self.log_every, self.eval_every = settings.log_interval, settings.eval_interval
        self.step_losses = torch.zeros(self.last, len(members), device=X["train"].device)  # a column per member
        for k, m in enumerate(members):
            self.step_losses[self.first - len(m.window) : self.first, k] = m.window.to(X["train"].device)
        self.outcomes: list[Any] = [None] * len(members)
        self.tally = Tally(running=len(members))
        self.share = 0.0  # training seconds per member so far: each interval's wall time divided among those training
        self.chunk: tuple | None = None  # the active members' batches for the current BATCH_CHUNK steps
        self.rates: list[tuple[float, tuple[int, ...]]] = []  # the last step's: each lr with its members' positions
        self.evaluating: list[int] = []  # the members the current evaluation scores
        self.active: list[int] = []
        self.features: list[Feature] = []
        self.keep(list(range(len(members))))
        self.features = [feature(self) for feature in FEATURES if any(feature.wanted(m.settings) for m in members)]

    def keep(self, still: list[int]) -> None:
        """Train only these members (indices into self.members) from now on."""
        if self.active and still:
            positions = [self.active.index(k) for k in still]
            self.engine.keep(positions)
            self.optimizer.keep(positions)
            for feature in self.features:
                feature.keep(positions)
            self.step_losses = self.step_losses[:, positions]
            if self.chunk is not None and self.engine.member_dim:
                index = torch.tensor(positions, device=self.X["train"].device)
                self.chunk = tuple(t.index_select(1, index) for t in self.chunk)
        self.active, self.tally.running = still, len(still)
        self.position = {k: position for position, k in enumerate(still)}  # each one's place in the stacked tensors
        self.smoothing = [self.members[k].settings.label_smoothing for k in still]
        schedules: dict[tuple, tuple] = {}  # one lr a step for the members that share a schedule
        for position, k in enumerate(still):
            schedules.setdefault(self.members[k].lr_key, (self.members[k].lr_at, []))[1].append(position)
        self.schedules = [(lr_at, tuple(positions)) for lr_at, positions in schedules.values()]

    def train(self, progress: Progress) -> list[Any]:
        """Train every member to its end; each one's outcome, in order: what its `finish` returned (its TrainState
        where it has none), or the exception that ended it (Diverged, Pruned, Interrupted)."""
        tick, upcoming = time.perf_counter(), self.upcoming(self.first)
        with stop_requests() as stop:
            for step in range(self.first, self.last):
                if not self.active:
                    break
                self.step(step)
                done = step + 1
                if step == self.first:
                    timeline.mark("first step")
                now = time.perf_counter()
                self.share += (now - tick) / len(self.active)
                tick = now
                if done < upcoming and not stop:
                    continue
                if self.point(done, stop):  # a stop ends every member here; one arriving after it, at the next step
                    progress(done, self.tally)
                upcoming = self.upcoming(done)
        timeline.mark("last step")
        if self.active:  # no step left to take (steps=0): each ends where it stands
            self.end(dict.fromkeys(self.active))
        return self.outcomes

    def upcoming(self, done: int) -> int:
        """The next step after `done` at which some member logs, evaluates, saves or ends: the steps between need no
        look at the members."""

        def next_multiple(every: int) -> int:
            return (done // every + 1) * every

        points = [next_multiple(self.log_every), next_multiple(self.eval_every)]
        for k in self.active:
            settings = self.members[k].settings
            points.append(settings.steps)
            if settings.checkpoint_interval:
                points.append(next_multiple(settings.checkpoint_interval))
        return min(points)

    def draw(self, step: int) -> None:
        """Every active member's batches for the BATCH_CHUNK steps from `step` (a step takes a view), each drawn from
        its own seed as its solo run draws it."""
        X, Y = self.X["train"], self.Y["train"]
        seeds = [self.members[k].settings.seed for k in self.active]
        rows = [batch_indices(seed, step // BATCH_CHUNK, len(Y), self.batch, X.device) for seed in seeds]
        index = torch.stack(rows, 1) if self.engine.member_dim else rows[0]  # [BATCH_CHUNK, (K,) batch]
        self.chunk = (X[index], Y[index])

    def step(self, step: int) -> None:
        """One optimizer step of every active member on its own batch (the whole split for full-batch descent) at
        its own learning rate."""
        if self.batch is None:
            x, y = self.X["train"], self.Y["train"]
        else:
            if step % BATCH_CHUNK == 0 or self.chunk is None:
                self.draw(step)
            x, y = self.chunk[0][step % BATCH_CHUNK], self.chunk[1][step % BATCH_CHUNK]
        self.rates = [(lr_at(step), positions) for lr_at, positions in self.schedules]
        losses = self.engine.step(x, y, self.smoothing)
        for feature in self.features:
            feature.before_update()
        self.optimizer.step(self.rates)
        for feature in self.features:
            feature.after_update()
        self.step_losses[step] = losses

    def point(self, done: int, stop: StopRequests) -> bool:
        """After `done` steps, if some member logs, evaluates, saves or ends here: its train loss and divergence,
        its evaluation, its logged row, its checkpoint, and whether it ends. True at such a point."""
        members, active = self.members, self.active
        log_point, eval_point = done % self.log_every == 0, done % self.eval_every == 0
        ends = {k for k in active if members[k].settings.steps == done}
        saves = [k for k in active if (every := members[k].settings.checkpoint_interval) and done % every == 0]
        if not (log_point or eval_point or ends or saves or stop):
            return False
        lrs = {active[position]: lr for lr, positions in self.rates for position in positions}
        ended: dict[int, Exception | None] = {}
        rows = self.log(done, lrs, log_point, ends, ended)
        evaluated = [k for k in active if eval_point and k not in ends and k not in ended]
        if evaluated:  # the last step is evaluated on every split, at the member's end
            self.evaluate(evaluated, done, rows, lrs, ended)
        for k, row in rows.items():
            if k not in ended:
                m = members[k]
                m.loggers.scalars(done, row if done < m.settings.steps else {"lr": row["lr"]})  # the end logs splits
                m.state.history.append({"step": done, **row})
        for k in saves:
            if k not in ends and k not in ended:  # any step: it saves the unlogged window too
                self.save(k)
        self.decide(done, stop, ends, ended)
        if ended:
            self.end(ended)
        return True

    def log(self, done: int, lrs: dict, log_point: bool, ends: set, ended: dict) -> dict[int, dict]:
        """Each logging member's mean train loss over its log window, read from the device here only, never per
        step; a mean that is NaN, infinite or above the member's diverge_above ends it (Diverged)."""
        rows = {}
        for k in self.active:
            m = self.members[k]
            m.state.step = done
            if log_point or k in ends:
                window = self.step_losses[done - 1 - (done - 1) % self.log_every : done, self.position[k]]
                m.train_loss = window.contiguous().mean().item()
                error = diverged(m.train_loss, m.settings.diverge_above, done, lrs[k])
                if error:
                    ended[k] = error
                    continue
                rows[k] = {"loss/train": m.train_loss, "lr": lrs[k]}
        return rows

    def evaluate(self, evaluated: list[int], done: int, rows: dict, lrs: dict, ended: dict) -> None:
        """Every active member's dev loss at once, kept by those evaluated at this step as the last, the best (with
        early stopping, its weights too) and the first below the target, beside what the features add; each is
        handed to its on_eval (an Optuna trial's pruner, which may end it: Pruned)."""
        self.evaluating = evaluated
        start = time.perf_counter()
        devs = self.engine.split_losses(self.evaluation, "dev")
        self.count_evaluation(time.perf_counter() - start)
        positions = [self.position[k] for k in evaluated]
        added = [feature.evaluated(positions) for feature in self.features]
        for k in evaluated:
            m, position, elapsed = self.members[k], self.position[k], self.members[k].seconds + self.share
            if record_evaluation(m.state, devs[position], m.settings.target, elapsed) and m.settings.early_stopping:
                m.best_weights = {n: t.detach().clone() for n, t in self.engine.weights(position, m.model).items()}
            self.tally.best_dev = min(self.tally.best_dev, m.state.dev_loss)
            row = rows[k] = {**rows.get(k, {}), "loss/dev": m.state.dev_loss, "lr": lrs[k]}
            judged = m.state.dev_loss
            for feature, values in zip(self.features, added):
                row.update(values.get(position, {}))
                judged = row.get(feature.judged, judged)
            if m.on_eval:
                try:
                    m.on_eval(done, judged, elapsed)
                except Exception as error:  # Pruned: this member ends here, the others go on
                    ended[k] = error

    def count_evaluation(self, seconds: float) -> None:
        """An evaluation's time, shared by the members it evaluated."""
        for k in self.evaluating:
            self.members[k].state.eval_seconds += seconds / len(self.evaluating)

    def decide(self, done: int, stop: StopRequests, ends: set, ended: dict) -> None:
        """Which of the other active members end here: a stop signal checkpoints and interrupts them (handing a
        scheduler's signal on to its handler after: makemore.cli.settle_stopped_run); early stopping restores the
        best weights; stop_at_target ends at the first evaluation below the target; the last step ends."""
        handler = stop.previous.get(stop[0]) if stop else None  # submitit's, for SIGUSR2 in one of its jobs
        scheduler = handler if stop and callable(handler) and stop[0] not in (signal.SIGINT, signal.SIGTERM) else None
        for k in self.active:
            m = self.members[k]
            if k in ended:
                continue
            if stop and k not in ends:
                self.save(k)
                ended[k] = Interrupted(stop[0], done, scheduler)
            elif m.settings.early_stopping and m.state.best.stale >= m.settings.early_stopping:
                m.state.early_stopped = True
                m.model.load_state_dict(m.best_weights)
                ended[k] = None
            elif m.settings.stop_at_target and m.state.reached:
                m.state.stopped_at_target = True
                ended[k] = None
            elif k in ends:
                ended[k] = None

    def save(self, k: int) -> None:
        """Member k's checkpoint, one format for a run alone and a population's member: resume= continues it either
        way."""
        m, position, step = self.members[k], self.position[k], self.members[k].state.step
        window = self.step_losses[step - step % self.log_every : step, position].contiguous()  # its unlogged steps
        training = dataclasses.replace(m.state, train_seconds=m.seconds + self.share)
        weights = self.engine.weights(position, m.model)
        optimizer = self.optimizer.state_dict(position, m.optimizer, m.model)
        saved = checkpoint(weights, optimizer, self.engine.generator_state(m.rng), window, training)
        if m.best_weights is not None:
            saved["best_model"] = m.best_weights
        for feature in self.features:
            saved.update(feature.saved(position))
        save_atomic({**saved, **m.checkpoint_context}, m.run_dir / CHECKPOINT)

    def end(self, ended: dict[int, Exception | None]) -> None:
        """Finish the members that reached their end (None) or keep why they stopped; the others go on. Members that
        all end together are scored on every split at once."""
        done = [k for k, error in ended.items() if error is None]
        together = 1 < len(done) == len(self.active) and not any(self.members[k].state.early_stopped for k in done)
        losses, seconds = self.final_losses(len(done)) if together else (None, 0.0)
        for k, error in ended.items():
            m, position = self.members[k], self.position[k]
            m.state.train_seconds = m.seconds + self.share
            if error is not None:
                self.outcomes[k] = error
                self.tally.diverged += isinstance(error, Diverged)
                self.tally.stopped += not isinstance(error, Diverged)
                continue
            if not m.state.early_stopped:  # early stopping restored its best weights into its model already
                self.engine.weights(position, m.model)
            m.state.eval_seconds += seconds
            own = {split: losses[split][position] for split in SPLITS} if losses else None
            self.outcomes[k] = m.finish(m.state, own) if m.finish else m.state
            self.tally.finished += 1
        self.keep([k for k in self.active if k not in ended])

    def final_losses(self, members: int) -> tuple[dict[str, list[float]], float]:
        """Every active member's losses on every split at once, and each one's share of the time they took."""
        start = time.perf_counter()
        losses = {split: self.engine.split_losses(self.evaluation, split) for split in SPLITS}
        return losses, (time.perf_counter() - start) / members


def fit(member: Member, X: dict, Y: dict, rows_per_batch: int | None = None) -> TrainState:
    """Train one member alone, the loop's population of one, for its steps (from its checkpoint, if it resumes),
    with its progress bar; return where training ended, or raise what ended it early (Diverged, Pruned,
    Interrupted). The last step is left to the caller, which evaluates every split. `rows_per_batch` replaces
    settings.batch_size as the rows of X drawn per step (whole items, for settings.batch_size next characters)."""
    settings = member.settings
    batch = rows_per_batch or settings.batch_size
    loop = Loop([member], X, Y, len(member.checkpoint_context["vocab"]), batch, stacked=False)
    bar = tqdm(
        total=settings.steps,
        initial=member.state.step,
        disable=not settings.progress,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
    )

    def progress(done: int, tally: Tally) -> None:
        bar.postfix = f"dev={member.state.dev_loss:.4f}, train={member.train_loss:.4f}"  # drawn by the update
        bar.update(done - bar.n)

    with bar:
        [outcome] = loop.train(progress)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
