"""A user's own model, in their own file and config directory, trains like a built-in one; debug presets."""

import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, interrupted_once, read_metrics, run_bash

# Seconds of training each: in the full suite, not the quick subset.
SEQUENCE_FAMILIES = [pytest.param(m, marks=pytest.mark.slow) for m in ("wavenet", "rnn", "gru", "transformer")]

MODEL = '''
"""Next-character logits from the last character of the context, and a model that ignores its input."""

import torch
from torch import nn


class LastCharacter(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, scale: float = 1.0):
        super().__init__()
        self.logits = nn.Embedding(vocab_size, vocab_size)
        nn.init.normal_(self.logits.weight, std=scale)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.logits(context[:, -1])


class Ignorant(nn.Module):
    def __init__(self, vocab_size: int, block_size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(context), -1)
'''


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """my_model.py and my_conf/model/*.yaml outside the package, as the README's example has them."""
    (tmp_path / "my_model.py").write_text(MODEL)
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "last_char.yaml").write_text(
        "_target_: my_model.LastCharacter\nname: last_char\nblock_size: 2\nscale: 0.1\n"
    )
    (tmp_path / "my_conf" / "model" / "ignorant.yaml").write_text(
        "_target_: my_model.Ignorant\nname: ignorant\nblock_size: 3\n"
    )
    return tmp_path


def user_command(user_dir: Path, args: str) -> subprocess.CompletedProcess:
    return run_bash(
        f"PYTHONPATH={user_dir} python {ROOT / 'train.py'} 'hydra.searchpath=[file://{user_dir / 'my_conf'}]' {args}",
        cwd=user_dir,
    )


@pytest.mark.slow
def test_a_users_model_trains_reruns_resumes_and_samples(user_dir):
    first = user_command(user_dir, "model=last_char steps=300 progress=false hydra.run.dir=outputs/first")
    assert first.returncode == 0, first.stderr[-1000:]
    run = user_dir / "outputs" / "first"
    metrics = read_metrics(run)
    assert metrics["status"] == "ok" and metrics["params"] == 27 * 27 and metrics["dev_loss"] < 2.9
    assert list(run.glob("events.out.tfevents.*"))

    rerun = run_bash(
        f"PYTHONPATH={user_dir} python {ROOT / 'train.py'} rerun=outputs/first hydra.run.dir=outputs/again",
        cwd=user_dir,
    )  # the saved config alone: no searchpath
    assert rerun.returncode == 0, rerun.stderr[-1000:]
    assert read_metrics(user_dir / "outputs" / "again")["dev_loss"] == metrics["dev_loss"]

    sample = run_bash(f"PYTHONPATH={user_dir} python -m makemore.sample outputs/first -n 5", cwd=user_dir)
    assert sample.returncode == 0 and len(sample.stdout.splitlines()) == 5, sample.stderr[-500:]

    args = [str(ROOT / "train.py"), f"hydra.searchpath=[file://{user_dir / 'my_conf'}]", "model=last_char"]
    args += ["steps=20000", "checkpoint_interval=200", "progress=false", "logger=none", "hydra.run.dir=outputs/long"]
    checkpoint = user_dir / "outputs" / "long" / "checkpoint.pt"
    interrupted_once(args, user_dir, checkpoint.exists, env={"PYTHONPATH": str(user_dir)})
    resumed = run_bash(f"PYTHONPATH={user_dir} python {ROOT / 'train.py'} resume=outputs/long", cwd=user_dir)
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert read_metrics(user_dir / "outputs" / "long")["steps"] == 20000


@pytest.mark.slow
def test_overfit_one_batch_fails_for_a_model_that_ignores_its_input(user_dir):
    result = user_command(user_dir, "model=ignorant debug=overfit progress=false")
    assert result.returncode == 1
    assert "overfit one batch: FAIL" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_model_that_cannot_be_imported_is_one_error_line(user_dir):
    result = run_bash(
        f"python {ROOT / 'train.py'} 'hydra.searchpath=[file://{user_dir / 'my_conf'}]' model=last_char", cwd=user_dir
    )  # no PYTHONPATH
    assert result.returncode == 1 and "No module named 'my_model'" in result.stderr
    assert not (user_dir / "outputs").exists()


# Each family at its default sizes, but the transformer smaller: in this per-window form every example
# recomputes its whole context, so evaluating the default transformer on all 228k examples takes minutes.
SMALL = {"transformer": ["model.n_layer=1", "model.n_embd=16", "model.block_size=8"]}


@pytest.mark.parametrize("model", ["mlp", *SEQUENCE_FAMILIES, "trigram_table", "additive"])
def test_every_family_overfits_one_batch(tmp_path, model, capsys):
    from makemore.train import train_run

    from helpers import compose_config

    steps = ["steps=300"] if model in ("gru", "transformer") else []  # the slow ones memorise 32 examples sooner
    overrides = [f"model={model}", "debug=overfit", "progress=false", *steps, *SMALL.get(model, [])]
    metrics = train_run(compose_config(*overrides), tmp_path)
    assert metrics["overfit"]["verdict"] == "pass"
    assert "overfit one batch: PASS" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["mlp", *SEQUENCE_FAMILIES, "trigram_count"])
def test_debug_fast_runs_every_family_end_to_end(tmp_path, model):
    from makemore.train import train_run

    from helpers import compose_config

    metrics = train_run(
        compose_config(f"model={model}", "debug=fast", "progress=false", *SMALL.get(model, [])), tmp_path
    )
    assert metrics["status"] == "ok"
    assert {"model.pt", "metrics.json", "samples.txt", "history.csv"} <= {p.name for p in tmp_path.iterdir()}
