"""The training loop in-process, against the lectures' loop written out by hand: batches, lr, logged losses,
evaluations, early stopping, the target, divergence, and a signal's checkpoint that resumes bit-identically."""

import copy
import math
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from makemore import loop, solo
from makemore.backprop import ManualBackward
from makemore.checkpoint import load_checkpoint
from makemore.data import build_vocab, make_dataset, read_items, resolve_path
from makemore.loggers import Loggers
from makemore.loop import BATCH_CHUNK, Best, Diverged, Interrupted, Member, batch_indices, fit
from makemore.models import MLP, RNN, loss_on
from makemore.optimizers import SGD, AdamW, is_plain_sgd, param_groups, solo_step
from makemore.rundir import CHECKPOINT, read_metrics
from makemore.search import Pruned
from makemore.settings import run_settings
from makemore.solo import SoloEngine
from makemore.weight_average import WeightAverage

from helpers import compose_config

STEPS, BATCH, LOG, EVAL = 60, 8, 10, 20


class Recorded:
    """A logger backend that keeps what the loop sends it."""

    def __init__(self):
        self.scalars_logged = []

    def scalars(self, step, values):
        self.scalars_logged.append((step, dict(values)))


@pytest.fixture(scope="module")
def data():
    items = read_items(resolve_path(None))[:400]
    return make_dataset(items, build_vocab(items), 3)


def config(*overrides):
    return compose_config(
        "optim=sgd",
        f"steps={STEPS}",
        f"batch_size={BATCH}",
        f"log_interval={LOG}",
        f"eval_interval={EVAL}",
        "checkpoint_interval=0",
        "progress=false",
        "target=null",
        *overrides,
    )


def fresh_model():
    torch.manual_seed(0)
    return MLP(27, 3, emb=4, hidden=16)


def train(data, cfg, run_dir, model=None, resume=None, on_eval=None):
    model = model or fresh_model()
    recorded = Recorded()
    extra = {"vocab": list(data.vocab.chars), "config": {}}
    settings, logged = run_settings(cfg), Loggers([recorded])
    member = Member(model, settings, cfg.optim, cfg.schedule, logged, run_dir, extra, resume, on_eval)
    state = fit(member, data.X, data.Y)
    return model, state, state.history, recorded.scalars_logged


def prune_at(pruned_step):
    """An on_eval that stops the run at one evaluation, as Optuna's pruner stops a losing trial."""

    def on_eval(step, dev_loss, train_seconds):
        if step == pruned_step:
            raise Pruned(0, step, dev_loss, train_seconds)

    return on_eval


def lecture_loop(model, X, Y, steps, lr_at):
    """Lecture 2's loop: a random minibatch (drawn as the loop documents: by seed and chunk), forward, backward,
    p -= lr * grad. Returns each step's loss."""
    losses = []
    for step in range(steps):
        generator = torch.Generator().manual_seed(42 * 1_000_003 + step // BATCH_CHUNK)
        ix = torch.randint(len(Y), (BATCH_CHUNK, BATCH), generator=generator)[step % BATCH_CHUNK]
        loss = F.cross_entropy(model(X[ix]), Y[ix])
        for p in model.parameters():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr_at(step) * p.grad
        losses.append(loss.item())
    return losses


def test_the_loop_is_the_lectures_loop(data, tmp_path):
    by_hand = fresh_model()
    losses = lecture_loop(
        by_hand, data.X["train"], data.Y["train"], STEPS, lambda step: 0.1 if step < STEPS / 2 else 0.01
    )
    model, timing, history, logged = train(data, config(), tmp_path)
    for ours, theirs in zip(model.state_dict().values(), by_hand.state_dict().values()):
        assert torch.allclose(ours, theirs, atol=1e-6)
    assert [row["step"] for row in history] == list(range(LOG, STEPS + 1, LOG))
    for row in history:
        window = losses[row["step"] - LOG : row["step"]]
        assert row["loss/train"] == pytest.approx(sum(window) / LOG, rel=1e-5)
        assert row["lr"] == pytest.approx(0.1 if row["step"] <= STEPS / 2 else 0.01)  # the window's last step's
    evaluated = [row["step"] for row in history if "loss/dev" in row]
    assert evaluated == [20, 40]  # not at the last step: the final losses come from every split after the loop
    assert logged[-1] == (STEPS, {"lr": history[-1]["lr"]}) and logged[0] == (
        LOG,
        {"loss/train": history[0]["loss/train"], "lr": 0.1},
    )
    assert timing.step == STEPS and timing.train_seconds > timing.eval_seconds > 0
    assert timing.reached == {} and not timing.early_stopped
    dev_at_40 = next(row["loss/dev"] for row in history if row["step"] == 40)
    assert timing.best == Best(
        min(row["loss/dev"] for row in history if "loss/dev" in row),
        20 if timing.best.dev_loss < dev_at_40 else 40,
        0 if timing.best.step == 40 else 1,
    )


def test_dev_is_evaluated_at_every_multiple_of_eval_interval_whatever_log_interval_is(data, tmp_path, monkeypatch):
    _, state, history, logged = train(data, config("eval_interval=7", "target=2.9"), tmp_path)
    evaluated = [row["step"] for row in history if "loss/dev" in row]
    assert evaluated == list(range(7, STEPS, 7))  # 7, 14, ..., 56: not only where a log point falls
    assert [row["step"] for row in history if "loss/train" in row] == list(range(LOG, STEPS + 1, LOG))
    assert [step for step, values in logged if "loss/dev" in values] == evaluated
    scripted_dev_losses(monkeypatch, [3.0, 3.0, 2.8, 2.5, 2.5, 2.5, 2.5, 2.5])
    _, state, _, _ = train(data, config("eval_interval=7", "target=2.9"), tmp_path)
    assert state.reached["step_to_target"] == 21  # the third evaluation: exact to the eval_interval grid


def test_a_run_past_one_chunk_of_batches_draws_the_next_chunk(data, tmp_path, monkeypatch):
    drawn = []

    def recording_step(self, xb, yb, smoothing):
        return drawn.append(xb) or torch.tensor(3.0)

    monkeypatch.setattr(SoloEngine, "step", recording_step)
    train(data, config(f"steps={BATCH_CHUNK + 20}", "eval_interval=1000"), tmp_path)
    X, n = data.X["train"], len(data.Y["train"])
    expected = [X[ix] for chunk in (0, 1) for ix in batch_indices(42, chunk, n, BATCH, torch.device("cpu"))]
    assert len(drawn) == BATCH_CHUNK + 20 and all(torch.equal(a, b) for a, b in zip(drawn, expected))


def test_each_chunk_of_batches_is_drawn_from_its_own_seed():
    for chunk in (0, 1, 7):  # what lecture_loop above draws: seed * 1,000,003 + chunk, whatever step a run resumes at
        generator = torch.Generator().manual_seed(42 * 1_000_003 + chunk)
        expected = torch.randint(500, (BATCH_CHUNK, BATCH), generator=generator)
        assert torch.equal(batch_indices(42, chunk, 500, BATCH, torch.device("cpu")), expected)


def full_batch_by_hand(data, steps):
    """The seed's loop: gradient descent at lr 0.5 on the whole train split."""
    by_hand = fresh_model()
    for _ in range(steps):
        loss = F.cross_entropy(by_hand(data.X["train"]), data.Y["train"])
        by_hand.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in by_hand.parameters():
                p -= 0.5 * p.grad
    return by_hand


def full_batch_config(steps):
    return compose_config(
        "optim=full_batch",
        "optim.lr=0.5",
        f"steps={steps}",
        "log_interval=1",
        "checkpoint_interval=0",
        "progress=false",
        "target=null",
    )


def test_full_batch_steps_take_the_whole_split(data, tmp_path):
    by_hand = full_batch_by_hand(data, steps=3)
    cfg = full_batch_config(steps=3)
    model, _, history, _ = train(data, cfg, tmp_path)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(model.parameters(), by_hand.parameters()))
    assert len(history) == 3


def test_the_first_evaluation_under_the_target_is_recorded(data, tmp_path):
    _, timing, history, _ = train(data, config("target=3.0", "eval_interval=10"), tmp_path)
    first = min(row["step"] for row in history if "loss/dev" in row and row["loss/dev"] < 3.0)
    assert timing.reached["step_to_target"] == first and 0 < timing.reached["seconds_to_target"] < timing.train_seconds
    _, never, _, _ = train(data, config("target=0.5", "eval_interval=10"), tmp_path)
    assert never.reached == {}


def test_early_stopping_stops_after_its_patience_and_restores_the_best_weights(data, tmp_path):
    rising = copy.copy(data)  # a dev split whose every next character is a rare 'q': its loss rises from ln 27
    rising.X = {**data.X, "dev": data.X["dev"][:200]}
    rising.Y = {**data.Y, "dev": torch.full((200,), data.vocab.chars.index("q"))}
    kept_on = [0, 0]
    model, timing, history, _ = train(
        rising, config("early_stopping=2", "eval_interval=10", "optim.lr=0.5", "schedule=constant"), tmp_path
    )
    devs = [(row["step"], row["loss/dev"]) for row in history if "loss/dev" in row]
    assert devs[1][1] > devs[0][1] and devs[2][1] > devs[0][1]
    assert timing.early_stopped and timing.step == 30 == history[-1]["step"]  # best at 10, none better at 20, 30
    assert timing.best.step == 10
    assert loss_on(model, rising.X["dev"], rising.Y["dev"], 27) == devs[0][1]
    at_best, _, _, _ = train(rising, config("optim.lr=0.5", "schedule=constant", "steps=10"), tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), at_best.parameters()))
    assert kept_on == [0, 0]


def test_divergence_stops_at_the_log_point_it_shows(data, tmp_path):
    with pytest.raises(Diverged) as stopped:
        train(data, config("optim.lr=1e5", "log_interval=5"), tmp_path)
    message = str(stopped.value)
    assert message.startswith("loss reached ") and ", above diverge_above=100, by step 5 (lr 100000); " in message
    assert message.endswith("the learning rate is likely too high: lower optim.lr")
    with pytest.raises(Diverged, match=r"^loss became nan by step 10 \(lr nan\)"):
        train(data, config("optim.lr=nan", "diverge_above=null"), tmp_path)


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, whatever an earlier test in this worker process left; put back after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_signal_saves_a_checkpoint_that_resumes_bit_identically(data, tmp_path, python_sigint):
    straight, _, straight_history, _ = train(data, config(), tmp_path / "straight")

    def interrupt(step, dev_loss, train_seconds):
        if step == 20:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: the loop finishes the step, saves, and stops

    run_dir = tmp_path / "interrupted"
    run_dir.mkdir()
    with pytest.raises(Interrupted) as stopped:
        train(data, config(), run_dir, on_eval=interrupt)
    assert str(stopped.value) == "SIGINT at step 20: checkpoint saved"
    assert stopped.value.signum == signal.SIGINT
    checkpoint = load_checkpoint(run_dir / CHECKPOINT, {"state"})
    assert checkpoint["state"]["step"] == 20 and len(checkpoint["window"]) == 0
    resumed, timing, history, _ = train(data, config(), run_dir, resume=checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), straight.parameters()))
    assert history == straight_history and timing.step == STEPS
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back


def test_a_signal_after_a_points_checks_interrupts_the_run_at_the_next_step_never_ends_it(
    data, tmp_path, python_sigint
):
    """A stop arriving after the loop looked for one at a point (here in the progress callback, as under a loaded
    machine it can arrive anywhere) interrupts the run one step later, checkpoint saved: it never ends it early as if
    finished."""
    cfg = config()
    extra = {"vocab": list(data.vocab.chars), "config": {}}
    member = Member(fresh_model(), run_settings(cfg), cfg.optim, cfg.schedule, Loggers([]), tmp_path, extra)

    def progress(done, tally):
        if done == LOG:
            signal.raise_signal(signal.SIGINT)

    [outcome] = loop.Loop([member], data.X, data.Y, data.vocab.size, BATCH, stacked=False).train(progress)
    assert isinstance(outcome, Interrupted) and outcome.step == LOG + 1, outcome
    assert load_checkpoint(tmp_path / CHECKPOINT, {"state"})["state"]["step"] == LOG + 1


def test_periodic_checkpoints_hold_the_unlogged_window(data, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    straight, _, straight_history, _ = train(data, config(), tmp_path / "a")

    run_dir = tmp_path / "b"
    run_dir.mkdir()
    with pytest.raises(Pruned) as pruned:
        train(data, config("checkpoint_interval=25", "eval_interval=30"), run_dir, on_eval=prune_at(30))
    assert pruned.value.step == 30 and pruned.value.train_seconds > 0
    checkpoint = load_checkpoint(run_dir / CHECKPOINT, {"state"})
    assert checkpoint["state"]["step"] == 25 and len(checkpoint["window"]) == 5  # steps 21-25 of the 21-30 window
    resumed, _, history, _ = train(data, config("checkpoint_interval=25"), run_dir, resume=checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), straight.parameters()))
    assert [row["loss/train"] for row in history] == [row["loss/train"] for row in straight_history]
    assert not math.isnan(history[-1]["loss/train"])


def test_only_plain_gradient_descent_is_plain():
    model = fresh_model()
    assert is_plain_sgd(torch.optim.SGD(model.parameters(), lr=0.1))
    for momentum, weight_decay, maximize in [(0.9, 0.0, False), (0.0, 0.1, False), (0.0, 0.0, True)]:
        sgd = torch.optim.SGD(
            model.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay, maximize=maximize
        )
        assert not is_plain_sgd(sgd)
    assert not is_plain_sgd(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True))
    assert not is_plain_sgd(torch.optim.AdamW(model.parameters()))


@pytest.mark.parametrize(
    "build, family",
    [
        (lambda groups: torch.optim.SGD(groups, lr=0.1, fused=True), SGD),
        (lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, fused=True), SGD),
        (
            lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, fused=True),
            SGD,
        ),
        (lambda groups: torch.optim.AdamW(groups, lr=0.01, fused=True), AdamW),
        (lambda groups: torch.optim.AdamW(groups, lr=0.01, betas=(0.8, 0.95), fused=True), AdamW),
    ],
    ids=["plain", "momentum", "momentum-decay", "adamw", "adamw-betas"],
)
def test_the_solo_step_is_torch_optims_step_to_the_last_digit_and_keeps_its_state(data, build, family):
    fused, stepped = fresh_model(), fresh_model()
    optimizers = {}
    for model in (fused, stepped):  # two groups, decayed and not, as build_optimizer makes them
        optimizers[model] = build(param_groups(model, 0.1))
    steps = {fused: solo_step(optimizers[fused], family), stepped: optimizers[stepped].step}
    for start in range(0, 5 * 64, 64):
        for model in (fused, stepped):
            if start == 128:  # as a resumed run does: load_state_dict replaces the optimizer's state
                optimizers[model].load_state_dict(optimizers[model].state_dict())
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(data.X["train"][start : start + 64]), data.Y["train"][start : start + 64]).backward()
            steps[model]()
    assert all(torch.equal(a, b) for a, b in zip(fused.parameters(), stepped.parameters()))
    mine, torchs = optimizers[fused].state_dict(), optimizers[stepped].state_dict()
    assert mine["param_groups"] == torchs["param_groups"] and mine["state"].keys() == torchs["state"].keys()
    for k, state in torchs["state"].items():
        assert state.keys() == mine["state"][k].keys()
        assert all(torch.equal(value, mine["state"][k][part]) for part, value in state.items())
        assert all(value.dtype == mine["state"][k][part].dtype for part, value in state.items())


def test_building_stepping_and_saving_an_optimizer_imports_no_compiler():
    """torch._dynamo costs a run's start ~1 s (more on a slow machine): none of an optimizer's uses here import it."""
    script = """
import sys, torch
from omegaconf import OmegaConf
from makemore.optimizers import build_optimizer, family_of, solo_step
for optim in ({"name": "adamw", "lr": 0.01, "betas": [0.9, 0.99], "weight_decay": 0.1},
              {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0},
              {"name": "lion", "lr": 0.01, "betas": [0.9, 0.99], "weight_decay": 0.1}):
    model = torch.nn.Linear(3, 2)
    config = OmegaConf.create(optim)
    optimizer, _ = build_optimizer(model, config, OmegaConf.create({"name": "constant"}), 10)
    model(torch.ones(1, 3)).sum().backward()
    solo_step(optimizer, family_of(config))()
    optimizer.load_state_dict(optimizer.state_dict())
    optimizer.zero_grad()
print("torch._dynamo" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout == "False\n", result.stderr[-2000:]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_manual_backward_model_trains_through_the_hand_derived_pass(data, monkeypatch, optimizer):
    calls = []
    for method in ("gradients", "forward", "sgd_backward"):
        real = getattr(ManualBackward, method)
        monkeypatch.setattr(
            ManualBackward,
            method,
            lambda self, *args, real=real, method=method: (calls.append(method), real(self, *args))[1],
        )
    torch.manual_seed(0)
    model = MLP(27, 3, emb=4, hidden=16, backward="manual")
    optim = (
        torch.optim.SGD(model.parameters(), lr=0.1)
        if optimizer == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01)
    )
    engine, stepper = solo.solo(model, optim, SGD if optimizer == "sgd" else AdamW, 32, 0.1)
    xb, yb = data.X["train"][:32], data.Y["train"][:32]
    expected = F.cross_entropy(model(xb), yb, label_smoothing=0.1).item()
    assert engine.step(xb, yb, [0.1]).item() == pytest.approx(expected, rel=1e-5)  # with its label smoothing
    stepper.step([(0.1, (0,))])
    # plain SGD: the backward pass fused into the update, after the forward; otherwise gradients for the optimizer
    assert calls == (["forward", "sgd_backward"] if optimizer == "sgd" else ["gradients", "forward"])


def test_the_autograd_step_applies_label_smoothing(data):
    model = fresh_model()
    xb, yb = data.X["train"][:32], data.Y["train"][:32]
    expected = F.cross_entropy(model(xb), yb, label_smoothing=0.2).item()
    assert SoloEngine(model).step(xb, yb, [0.2]).item() == pytest.approx(expected, rel=1e-6)


def test_full_batch_with_the_hand_derived_backward_is_the_lecture_loop(data, tmp_path):
    by_hand = full_batch_by_hand(data, steps=2)
    torch.manual_seed(0)
    manual = MLP(27, 3, emb=4, hidden=16, backward="manual")
    cfg = full_batch_config(steps=2)
    model, _, _, _ = train(data, cfg, tmp_path, model=manual)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(model.parameters(), by_hand.parameters()))


class Clock:
    """A perf_counter that moves one second per reading, so the loop's timings are exact sums of readings."""

    def __init__(self):
        self.readings = []

    def perf_counter(self):
        self.readings.append(float(len(self.readings) + 1))
        return self.readings[-1]


def test_the_times_reported_are_training_and_evaluation_time_across_a_resume(data, tmp_path, monkeypatch):
    """With a clock that moves one second per reading, the loop reads it once after each step and twice around each
    evaluation: training time is every second from the first step to the last, evaluations included, and an
    evaluation's own second is also its eval time."""
    clock = Clock()
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=clock.perf_counter, time=time.time))
    _, timing, history, _ = train(data, config(), tmp_path)
    evaluations = sum("loss/dev" in row for row in history)
    assert evaluations == 2 and timing.eval_seconds == 2.0  # one reading apart, each of the two evaluations
    assert timing.train_seconds == clock.readings[-1] - clock.readings[0] == STEPS + 2 * evaluations

    clock.readings.clear()
    with pytest.raises(Pruned) as pruned:
        train(data, config("checkpoint_interval=25", "eval_interval=30"), tmp_path, on_eval=prune_at(30))
    assert pruned.value.train_seconds == 30  # judged before its evaluation's own readings are counted
    checkpoint = load_checkpoint(tmp_path / CHECKPOINT, {"state"})
    first_part = checkpoint["state"]["train_seconds"]
    assert first_part == 25

    clock.readings.clear()
    _, resumed, _, _ = train(data, config("checkpoint_interval=25"), tmp_path, resume=checkpoint)
    assert resumed.train_seconds == first_part + clock.readings[-1] - clock.readings[0]
    assert resumed.train_seconds == first_part + (STEPS - 25) + 2  # the evaluation at 40 after it (60 ends it)


def scripted_dev_losses(monkeypatch, losses):
    """Every dev evaluation of the loop returns the next of `losses`: early stopping and the target, step by step."""
    script = iter(losses)
    monkeypatch.setattr(solo, "loss_on", lambda model, X, Y, vocab_size: next(script))


def test_early_stopping_counts_a_tie_as_no_better_and_a_new_best_renews_its_patience(data, tmp_path, monkeypatch):
    scripted_dev_losses(monkeypatch, [3.0, 3.1, 2.9, 3.2, 2.9, 2.9, 2.9, 2.9, 2.9])
    _, timing, history, _ = train(data, config("early_stopping=2", "eval_interval=10", "steps=100"), tmp_path)
    # best at 30; 40 is worse and 50 only ties it: two evaluations without a better loss, so it stops at 50
    assert timing.early_stopped and timing.step == 50 == history[-1]["step"]
    assert (timing.best.dev_loss, timing.best.step) == (2.9, 30)


def test_the_target_counts_only_a_dev_loss_below_it(data, tmp_path, monkeypatch):
    scripted_dev_losses(monkeypatch, [2.3, 2.2, 2.1, 2.0, 1.9])
    _, timing, _, _ = train(data, config("target=2.2", "eval_interval=10"), tmp_path)
    assert timing.reached["step_to_target"] == 30  # 2.2 at step 20 is the target, not under it
    assert timing.reached["target_reached_at"] == pytest.approx(
        time.time(), abs=60
    )  # the wall clock, for the dashboard


def test_a_resumed_early_stopping_run_keeps_the_best_weights_it_had(data, tmp_path, monkeypatch):
    stopping = ("early_stopping=2", "eval_interval=10", "steps=100")
    scripted_dev_losses(monkeypatch, [3.0, 2.9, 3.1, 3.2])
    straight, timing, _, _ = train(data, config(*stopping), tmp_path / "a")
    assert timing.early_stopped and timing.step == 40
    run_dir = tmp_path / "b"
    run_dir.mkdir()
    scripted_dev_losses(monkeypatch, [3.0, 2.9, 3.1])
    with pytest.raises(Pruned):  # stopped after the best (step 20) and before early stopping ends the run
        train(data, config(*stopping, "checkpoint_interval=25"), run_dir, on_eval=prune_at(30))
    checkpoint = load_checkpoint(run_dir / CHECKPOINT, {"state"})
    assert checkpoint["state"]["step"] == 25 and set(checkpoint["best_model"]) == set(straight.state_dict())
    scripted_dev_losses(monkeypatch, [3.1, 3.2])  # the evaluations after step 25: 30 and 40
    resumed, timing, _, _ = train(data, config(*stopping, "checkpoint_interval=25"), run_dir, resume=checkpoint)
    assert timing.early_stopped and timing.step == 40 and (timing.best.dev_loss, timing.best.step) == (2.9, 20)
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), straight.parameters()))


def test_periodic_checkpoints_stop_before_the_end_and_hold_no_best_weights_without_early_stopping(data, tmp_path):
    train(data, config("checkpoint_interval=30"), tmp_path)
    checkpoint = load_checkpoint(tmp_path / CHECKPOINT, {"state"})
    assert checkpoint["state"]["step"] == 30  # not 60: the finished run's weights are model.pt's
    assert "best_model" not in checkpoint


def test_the_progress_bar_counts_steps_and_shows_the_last_losses(data, tmp_path, capsys):
    _, _, history, _ = train(data, config("progress=true"), tmp_path)
    bar = capsys.readouterr().err.rstrip().split("\r")[-1]
    train_loss, dev_loss = history[-1]["loss/train"], [row["loss/dev"] for row in history if "loss/dev" in row][-1]
    assert re.search(rf"\b{STEPS}/{STEPS} \[.*(step/s|s/step), dev={dev_loss:.4f}, train={train_loss:.4f}\]$", bar), bar
    train(data, config(), tmp_path)
    assert capsys.readouterr().err == ""  # progress=false: nothing


def test_the_autograd_step_leaves_out_padded_targets():
    torch.manual_seed(0)
    model = RNN(5, block_size=4, n_embd=3, n_embd2=6, cell="gru")
    xb = torch.tensor([[0, 1, 2, 3], [0, 4, 2, 0]])
    yb = torch.tensor([[1, 2, 3, 0], [4, 2, 0, -1]])  # -1: past the second item's end
    logits = model.forward_items(xb)
    expected = F.cross_entropy(logits[yb >= 0], yb[yb >= 0], label_smoothing=0.1).item()
    assert SoloEngine(model).step(xb, yb, [0.1]).item() == pytest.approx(expected, rel=1e-6)


def test_zero_steps_leave_the_initial_weights(data, tmp_path):
    model, timing, history, _ = train(data, config("steps=0"), tmp_path)
    assert timing.step == 0 and history == []
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh_model().parameters()))


def test_a_loss_at_the_ceiling_is_not_yet_divergence():
    assert loop.diverged(100.0, 100.0, 10, 0.1) is None and loop.diverged(3.0, None, 10, 0.1) is None
    assert str(loop.diverged(100.5, 100.0, 10, 0.1)) == (
        "loss reached 100.5, above diverge_above=100, by step 10 (lr 0.1); the learning rate is likely too high: "
        "lower optim.lr"
    )


def test_a_schedulers_signal_is_saved_then_handed_to_the_schedulers_own_handler(data, tmp_path):
    from makemore.cli import settle_stopped_run

    received = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))  # as submitit's
    try:

        def warn(step, dev_loss, train_seconds):
            if step == 20:
                signal.raise_signal(signal.SIGUSR2)  # the scheduler's warning before a timeout

        with pytest.raises(Interrupted) as stopped:
            train(data, config(), tmp_path, on_eval=warn)
        assert received == []  # saved first: the scheduler's handler is called by the exit policy, after
        assert load_checkpoint(tmp_path / CHECKPOINT, {"state"})["state"]["step"] == 20
        sweep_result = settle_stopped_run(stopped.value, tmp_path, tmp_path.parent)
        assert sweep_result == math.inf  # a sweep member: the sweep goes on
        assert received == [signal.SIGUSR2]
        assert read_metrics(tmp_path)["status"] == "interrupted"

        def out_of_requeues(signum, frame):
            raise RuntimeError("Job not requeued because: timed-out too many times.")  # submitit's, in kind

        stopped.value.scheduler = out_of_requeues
        assert settle_stopped_run(stopped.value, tmp_path, tmp_path.parent) == math.inf
        assert read_metrics(tmp_path)["status"] == "interrupted"  # not failed: a continued sweep resumes it
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_the_weight_average_follows_the_weights_with_a_short_warmup():
    """After the n-th update the average moves toward the weights by 1 - min(decay, (1 + n) / (10 + n))."""
    model = nn.Linear(1, 1, bias=False)
    member = SimpleNamespace(model=model, resume=None, settings=SimpleNamespace(ema_decay=0.9))
    average = WeightAverage(SimpleNamespace(members=[member], engine=SoloEngine(model)))
    expected = model.weight.item()
    for n, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0], 1):
        with torch.no_grad():
            model.weight.fill_(value)
        average.after_update()
        expected += (1 - min(0.9, (1 + n) / (10 + n))) * (value - expected)
        assert average.models[0].weight.item() == pytest.approx(expected, rel=1e-6)
    assert average.saved(0)["weight_average"]["updates"] == 10


def test_ema_decay_evaluates_the_weights_moving_average_and_hands_it_to_the_pruner(data, tmp_path):
    """Its dev loss is logged beside the weights' own, which it leaves as they were, and is what on_eval judges."""
    judged = []
    plain, _, plain_history, _ = train(data, config(), tmp_path / "plain")
    model, _, history, logged = train(
        data, config("ema_decay=0.9"), tmp_path / "ema", on_eval=lambda step, dev, seconds: judged.append((step, dev))
    )
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), plain.parameters()))
    assert [row.get("loss/dev") for row in history] == [row.get("loss/dev") for row in plain_history]
    averaged = [row for row in history if "loss/dev_ema" in row]
    assert [row["step"] for row in averaged] == [EVAL, 2 * EVAL]
    assert judged == [(row["step"], row["loss/dev_ema"]) for row in averaged]
    assert all(row["loss/dev_ema"] != row["loss/dev"] for row in averaged)
    assert [step for step, values in logged if "loss/dev_ema" in values] == [EVAL, 2 * EVAL]


def test_a_resumed_run_continues_the_same_weight_average(data, tmp_path):
    settings = ("ema_decay=0.9", "checkpoint_interval=20")
    (tmp_path / "straight").mkdir()
    straight = train(data, config(*settings), tmp_path / "straight")[2]
    run_dir = tmp_path / "b"
    run_dir.mkdir()
    with pytest.raises(Pruned):  # at step 40, with the checkpoint of step 20 on disk
        train(data, config(*settings), run_dir, on_eval=prune_at(2 * EVAL))
    resumed = train(data, config(*settings), run_dir, resume=load_checkpoint(run_dir / CHECKPOINT, {"state"}))[2]
    assert resumed == straight
