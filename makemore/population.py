"""A population: sweep members of one shape trained together as one stacked model (makemore.stacked).

Each member is a run like any other (makemore.train.Run): its own batches (its seed's), schedule, evaluations,
checkpoints, logs and outputs, and the numbers of its solo run. A member ends on its own, when it reaches its
steps, stops early, diverges or is pruned by Optuna: it is finished (or recorded) at once and the others go on
without it. A stop signal (Ctrl-C, SIGTERM, SIGUSR2) checkpoints every member still training; continuing the sweep
resumes them together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from makemore.checkpoint import save_atomic
from makemore.data import SPLITS
from makemore.loop import (
    BATCH_CHUNK,
    Diverged,
    Interrupted,
    TrainState,
    batch_indices,
    checkpoint,
    diverged,
    record_evaluation,
    stop_requests,
)
from makemore.models import loss_on
from makemore.optim import build_optimizer
from makemore.rundir import CHECKPOINT, POPULATION, write_json
from makemore.stacked import Evaluation, engine_for
from makemore.stacked_optim import StackedOptimizer
from makemore.train import Run, finish, report_end


@dataclass
class Member:
    """One member's side of the population: its run, its solo optimizer (on the run's model, which holds its
    weights whenever they are read out: its hyperparameters, and its checkpoints' format), its learning rate at
    each step and where its training stands."""

    job: Run
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    state: TrainState
    on_eval: Callable[[int, float, float], None] | None
    rng: torch.Tensor  # the global generator's state after its model was built, as its solo run saves it
    best_weights: dict | None = None  # with early_stopping: the weights at the best dev loss
    train_loss: float = math.nan  # its last log window's
    seconds: float = 0.0  # its training seconds before this session (a resumed run's)
    window: list = field(default_factory=list)  # the unfinished log window's step losses of a resumed run

    def __post_init__(self) -> None:  # the config's numbers, read once: a config's lookups cost microseconds each
        cfg = self.job.cfg
        self.steps, self.seed, self.smoothing = cfg.steps, cfg.seed, cfg.label_smoothing
        self.save_every, self.patience = cfg.checkpoint_interval, cfg.early_stopping
        self.stop_at_target = cfg.stop_at_target
        self.ceiling, self.target = cfg.diverge_above, cfg.target
        self.schedule = (cfg.optim.lr, cfg.steps, *sorted(cfg.schedule.items()))  # equal: equal lr at every step


def member(job: Run, resume: dict | None, on_eval) -> Member:
    """A member at its seed's initial weights, or at its checkpoint's weights and optimizer state."""
    optimizer, lr_at = build_optimizer(job.model, job.cfg.optim, job.cfg.schedule, job.cfg.steps)
    if resume is None:
        return Member(job, optimizer, lr_at, TrainState(), on_eval, job.rng)
    job.model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    state = TrainState.restored(resume["state"])
    window = resume["window"].tolist()
    best = resume.get("best_model")
    return Member(job, optimizer, lr_at, state, on_eval, resume["rng"], best, math.nan, state.train_seconds, window)


@dataclass
class Tally:
    """How the members ended so far and the best dev loss: what the progress bar says."""

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


Progress = Callable[[int, Tally], None]  # (steps done, tally) at every log point


def train_population(
    jobs: list[Run], resumes: list[dict | None], reporters: list, threads: int, progress: Progress
) -> list[dict | Exception]:
    """Train the members together from their common step; each one's outcome, in order: its metrics (it finished
    and wrote its outputs) or the exception that ended it (Diverged, Pruned, Interrupted: the caller records it).
    `threads`: torch's threads while more than one member trains."""
    return Population(jobs, resumes, reporters, threads).train(progress)


def progress_bar(title: str, first: int, last: int, shown: bool) -> tqdm:
    """The population's one progress bar: steps, and how many members run, finished, diverged or stopped."""
    return tqdm(total=last, initial=first, disable=not shown, desc=title, unit="step", dynamic_ncols=True)


class Population:
    """The members' stacked engine and optimizer, their data, and where each member stands."""

    def __init__(self, jobs: list[Run], resumes: list[dict | None], reporters: list, threads: int):
        self.members = [member(job, resume, reporter) for job, resume, reporter in zip(jobs, resumes, reporters)]
        data, cfg = jobs[0].data, jobs[0].cfg
        models = [m.job.model for m in self.members]
        self.engine = engine_for(models, data.Y["train"].dim() == 2)
        self.optimizer = StackedOptimizer(self.engine, [m.optimizer for m in self.members], models)
        for k, m in enumerate(self.members):
            if resumes[k]:
                self.optimizer.load_from(k, m.optimizer, m.job.model)
        self.first, self.last = self.members[0].state.step, max(m.steps for m in self.members)
        self.X, self.Y, self.vocab_size = data.X, data.Y, data.dataset.vocab.size
        self.evaluation = Evaluation(self.X, self.Y, self.vocab_size)
        self.batch = data.rows_per_batch or cfg.batch_size
        self.log_every, self.eval_every = cfg.log_interval, cfg.eval_interval
        self.threads = threads
        self.step_losses = torch.zeros(self.last, len(self.members), device=self.X["train"].device)
        for k, m in enumerate(self.members):
            if m.window:
                self.step_losses[self.first - len(m.window) : self.first, k] = torch.tensor(m.window)
        self.outcomes: list[dict | Exception | None] = [None] * len(self.members)
        self.tally = Tally(running=len(self.members))
        self.share = 0.0  # training seconds per member so far: each interval's wall time divided among those training
        self.chunk: tuple | None = None  # the active members' batches for the current BATCH_CHUNK steps
        self.active: list[int] = []
        self.keep(list(range(len(self.members))))

    def keep(self, still: list[int]) -> None:
        """Train only these members (indices into self.members) from now on."""
        self.tally.running = len(still)
        if not still:
            self.active = []
            return
        if self.active:
            positions = [self.active.index(k) for k in still]
            self.engine.keep(positions)
            self.optimizer.keep(positions)
            if self.chunk is not None:
                index = torch.tensor(positions, device=self.X["train"].device)
                self.chunk = tuple(t.index_select(1, index) for t in self.chunk)
        self.active = still
        self.columns = torch.tensor(still, device=self.X["train"].device)  # each one's column of step_losses
        self.smoothing = [self.members[k].smoothing for k in still]
        schedules: dict[tuple, tuple] = {}  # one lr a step for the members that share a schedule
        for position, k in enumerate(still):
            schedules.setdefault(self.members[k].schedule, (self.members[k].lr_at, []))[1].append(position)
        self.schedules = [(lr_at, tuple(positions)) for lr_at, positions in schedules.values()]
        torch.set_num_threads(max(1, min(self.threads, len(still))))

    def train(self, progress: Progress) -> list[dict | Exception]:
        tick, upcoming = time.perf_counter(), self.upcoming(self.first)
        with stop_requests() as stop:
            for step in range(self.first, self.last):
                if not self.active:
                    break
                rates = self.step(step)
                done = step + 1
                now = time.perf_counter()
                self.share += (now - tick) / len(self.active)
                tick = now
                if done < upcoming and not stop:
                    continue
                if self.point(done, rates, stop):
                    progress(done, self.tally)
                upcoming = self.upcoming(done)
                if stop:
                    break
        return self.outcomes

    def upcoming(self, done: int) -> int:
        """The next step after `done` at which some member logs, evaluates, saves or ends: the steps between need no
        look at the members."""

        def next_multiple(every: int) -> int:
            return (done // every + 1) * every

        points = [next_multiple(self.log_every), next_multiple(self.eval_every)]
        for k in self.active:
            m = self.members[k]
            points += [m.steps] + ([next_multiple(m.save_every)] if m.save_every else [])
        return min(points)

    def step(self, step: int) -> list[tuple[float, tuple[int, ...]]]:
        """One optimizer step of every active member on its own batch; the learning rates it took."""
        X, Y = self.X["train"], self.Y["train"]
        if self.batch is None:
            xb, yb = X, Y
        else:
            if step % BATCH_CHUNK == 0 or self.chunk is None:  # each member's own batches, as drawn alone
                seeds = [self.members[k].seed for k in self.active]
                rows = [batch_indices(seed, step // BATCH_CHUNK, len(Y), self.batch, X.device) for seed in seeds]
                index = torch.stack(rows, 1)  # [BATCH_CHUNK, K, batch]
                self.chunk = (X[index], Y[index])
            xb, yb = (t[step % BATCH_CHUNK] for t in self.chunk)
        rates = [(lr_at(step), positions) for lr_at, positions in self.schedules]
        losses = self.engine.step(xb, yb, self.smoothing)
        self.optimizer.step(rates)
        self.step_losses[step].index_copy_(0, self.columns, losses)
        return rates

    def point(self, done: int, rates: list, stop: list) -> bool:
        """A log, evaluation, checkpoint or end point for some member after `done` steps, if it is one: log and
        evaluate, checkpoint, and end the members that are done. True at a point."""
        members, active = self.members, self.active
        log_point, eval_point = done % self.log_every == 0, done % self.eval_every == 0
        ends = {k for k in active if members[k].steps == done}
        saves = [k for k in active if members[k].save_every and done % members[k].save_every == 0]
        if not (log_point or eval_point or ends or saves or stop):
            return False
        lr = {active[position]: lr for lr, positions in rates for position in positions}
        ended: dict[int, Exception | None] = {}
        rows: dict[int, dict] = {}
        for k in active:
            m = members[k]
            m.state.step = done
            if log_point or k in ends:
                window = self.step_losses[done - 1 - (done - 1) % self.log_every : done, k].contiguous()
                m.train_loss = window.mean().item()
                error = diverged(m.train_loss, m.ceiling, done, lr[k])
                if error:
                    ended[k] = error
                    continue
                rows[k] = {"loss/train": m.train_loss, "lr": lr[k]}
        evaluated = [k for k in active if eval_point and k not in ends and k not in ended]
        if evaluated:
            self.evaluate(evaluated, done, rows, lr, ended)
        for k, row in rows.items():
            if k not in ended:
                m = members[k]
                m.job.loggers.scalars(done, row if done < m.steps else {"lr": row["lr"]})
                m.state.history.append({"step": done, **row})
        for k in saves:
            if k not in ends and k not in ended:
                self.save(k)
        for k in active:
            m = members[k]
            if k in ended:
                continue
            if stop and k not in ends:
                self.save(k)
                ended[k] = Interrupted(stop[0], done)
            elif m.patience and m.state.best.stale >= m.patience:
                m.state.early_stopped = True
                m.job.model.load_state_dict(m.best_weights)
                ended[k] = None
            elif m.stop_at_target and m.state.reached:
                m.state.stopped_at_target = True
                ended[k] = None
            elif k in ends:
                ended[k] = None
        if ended:
            self.end(ended)
        return True

    def evaluate(self, evaluated: list[int], done: int, rows: dict, lr: dict, ended: dict) -> None:
        """Every active member's dev loss, stacked; kept by those evaluated at this step, reported to their trials."""
        start = time.perf_counter()
        devs = self.evaluation.losses(self.engine, "dev")
        seconds = (time.perf_counter() - start) / len(self.active)
        for k in evaluated:
            m, position = self.members[k], self.active.index(k)
            m.state.eval_seconds += seconds
            if record_evaluation(m.state, devs[position], m.target, m.seconds + self.share) and m.patience:
                m.best_weights = {n: t.clone() for n, t in self.engine.weights(position, m.job.model).items()}
            self.tally.best_dev = min(self.tally.best_dev, m.state.dev_loss)
            rows[k] = {**rows.get(k, {}), "loss/dev": m.state.dev_loss, "lr": lr[k]}
            if m.on_eval:
                try:
                    m.on_eval(done, m.state.dev_loss, m.seconds + self.share)
                except Exception as error:  # Pruned: this member ends here, the others go on
                    ended[k] = error

    def save(self, k: int) -> None:
        """Member k's checkpoint, in a solo run's format: resume= continues it alone as well as in a population."""
        m, position = self.members[k], self.active.index(k)
        window = self.step_losses[m.state.step - m.state.step % self.log_every : m.state.step, k]
        training = TrainState(**{**m.state.__dict__, "train_seconds": m.seconds + self.share})
        weights = self.engine.weights(position, m.job.model)
        optimizer = self.optimizer.state_dict(position, m.optimizer, m.job.model)
        saved = checkpoint(weights, optimizer, m.rng, window.contiguous(), training)
        best = {"best_model": m.best_weights} if m.best_weights is not None else {}
        save_atomic({**saved, **best, **m.job.checkpoint_context}, m.job.run_dir / CHECKPOINT)

    def end(self, ended: dict[int, Exception | None]) -> None:
        """Finish the members that reached their end (None) or record why they stopped; the others go on."""
        done = [k for k, error in ended.items() if error is None]
        together = len(done) == len(self.active) and not any(self.members[k].state.early_stopped for k in done)
        stacked = final_losses(self.engine, self.evaluation) if together else None
        for k, error in ended.items():
            m = self.members[k]
            m.state.train_seconds = m.seconds + self.share
            if error is not None:
                self.outcomes[k] = error
                m.job.loggers.close()
                self.tally.diverged += isinstance(error, Diverged)
                self.tally.stopped += not isinstance(error, Diverged)
                continue
            if not m.state.early_stopped:  # early stopping restored its best weights into its model already
                self.engine.weights(self.active.index(k), m.job.model)
            start = time.perf_counter()
            losses = stacked[self.active.index(k)] if stacked else member_losses(m, self.X, self.Y, self.vocab_size)
            m.state.eval_seconds += (time.perf_counter() - start) / (len(done) if stacked else 1)
            try:
                self.outcomes[k] = finish(m.job, m.state, losses)
            finally:
                m.job.loggers.close()
            with tqdm.external_write_mode():  # the member's last lines above the population's bar
                report_end(m.job.cfg, self.outcomes[k])
            self.tally.finished += 1
        self.keep([k for k in self.active if k not in ended])


def write_population_record(run_dir: Path, population: dict) -> None:
    """The member's record of its population (.hydra/population.json), written when it first trains in one: a
    continued member keeps the record of the population it started in."""
    path = run_dir / POPULATION
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, population)


def final_losses(engine, evaluation: Evaluation) -> list[dict]:
    """Every member's final losses on every split, stacked."""
    losses = {split: evaluation.losses(engine, split) for split in SPLITS}
    return [{split: losses[split][k] for split in SPLITS} for k in range(engine.size)]


def member_losses(m: Member, X: dict, Y: dict, vocab_size: int) -> dict:
    """One member's final losses on every split, from its own model."""
    return {split: loss_on(m.job.model, X[split], Y[split], vocab_size) for split in SPLITS}
