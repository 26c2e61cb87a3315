"""Overfitting in plain sight: the best dev loss and its step, the warning, early_stopping, and the 2.2 target
kept for the built-in names. On a small dataset the test writes, where a big MLP overfits within 300 steps."""

import csv
import random

import pytest

from makemore.checkpoint import load_model
from makemore.data import load_dataset
from makemore.models import loss_on
from makemore.train import train_run

from helpers import compose_config, read_metrics, run_train

OVERFITS = [
    "steps=1500",
    "eval_interval=100",
    "log_interval=50",
    "model.hidden=300",
    "model.emb=16",
    "progress=false",
    "logger=none",
    "samples=2",
]


@pytest.fixture
def small_data(tmp_path):
    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 7))) for _ in range(300)]
    path = tmp_path / "small.txt"
    path.write_text("\n".join(words))
    return path


def dev_history(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return {int(r["step"]): float(r["loss/dev"]) for r in csv.DictReader(f) if r["loss/dev"]}


@pytest.mark.slow
def test_an_overfitting_run_records_its_best_dev_and_says_so_last(tmp_path, small_data):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, f"data.path={small_data}", *OVERFITS)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics, history = read_metrics(run_dir), dev_history(run_dir)
    best_step = min(history, key=history.get)
    assert metrics["best_dev_step"] == best_step and metrics["best_dev_loss"] == history[best_step]
    assert metrics["dev_loss"] > metrics["best_dev_loss"] + 0.02 and metrics["weights"] == "last step"
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("warning: overfitting") and f"steps={best_step}" in last
    assert all(remedy in last for remedy in ("dropout", "weight_decay", "early_stopping"))
    assert "target" not in metrics or metrics["target"] is None  # 2.2 is a figure for names.txt only
    assert "no target" in result.stdout


def test_early_stopping_stops_and_keeps_the_best_dev_weights(tmp_path, small_data):
    metrics = train_run(compose_config(f"data.path={small_data}", *OVERFITS, "early_stopping=3"), tmp_path / "run")
    history = dev_history(tmp_path / "run")
    best_step = min(history, key=history.get)
    assert metrics["early_stopped_at"] == best_step + 3 * 100 == metrics["steps"] < 1500
    assert metrics["best_dev_step"] == best_step and metrics["weights"].startswith(f"best dev, step {best_step}")
    model, _, _ = load_model(tmp_path / "run" / "model.pt")
    dataset = load_dataset(str(small_data), 3)
    assert loss_on(model, dataset.X["dev"], dataset.Y["dev"], dataset.vocab.size) == pytest.approx(history[best_step])
    assert metrics["dev_loss"] == pytest.approx(history[best_step])


def test_a_run_that_keeps_improving_has_no_warning_and_its_last_step_is_its_best(tmp_path, capsys):
    metrics = train_run(
        compose_config("steps=300", "eval_interval=100", "logger=none", "progress=false", "samples=2"), tmp_path / "run"
    )
    assert metrics["best_dev_step"] == 300 and metrics["best_dev_loss"] == metrics["dev_loss"]
    assert metrics["target"] == 2.2 and "warning" not in capsys.readouterr().out


def test_the_target_is_for_the_built_in_names_unless_set(small_data):
    from makemore.schema import validate

    assert validate(compose_config()).target == 2.2
    assert validate(compose_config(f"data.path={small_data}")).target is None
    assert validate(compose_config(f"data.path={small_data}", "target=3.0")).target == 3.0
