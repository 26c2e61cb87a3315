"""Lecture 4's hand-derived backward pass: gradients equal to autograd's, and runs that behave like autograd's."""

import copy

import pytest
import torch
import torch.nn.functional as F

from makemore.backprop import ManualBackward
from makemore.checkpoint import load_checkpoint
from makemore.errors import MakemoreError
from makemore.models import MLP
from makemore.schema import validate
from makemore.train import train_run

from helpers import FAST, compose_config

# Random small MLPs: with and without BatchNorm, several block sizes and layer counts, direct connections.
CONFIGS = [
    dict(block_size=3, emb=10, hidden=200, init="randn"),
    dict(block_size=1, emb=2, hidden=5),
    dict(block_size=4, emb=5, hidden=16, layers=3, norm="batch"),
    dict(block_size=2, emb=3, hidden=8, layers=2, direct=True),
    dict(block_size=5, emb=4, hidden=12, norm="batch", direct=True, init="torch"),
    dict(block_size=8, emb=6, hidden=20, layers=4, norm="batch", init="randn"),
]


def relative_error(mine: torch.Tensor, reference: torch.Tensor) -> float:
    return ((mine - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_manual_gradients_equal_autograds(options, smoothing):
    """Lecture 4's `cmp`: every parameter's gradient, and the BatchNorm running averages.

    Tolerance 1e-5 of the largest gradient entry: float32 carries ~1.2e-7 relative error per operation, and a
    gradient entry sums up to a few hundred products in a different order than autograd does (seen: <= 5e-7).
    """
    torch.manual_seed(len(str(options)))
    model = MLP(27, **options)
    twin = copy.deepcopy(model)
    batch = 32
    context, targets = torch.randint(27, (batch, options["block_size"])), torch.randint(27, (batch,))
    loss = F.cross_entropy(model(context), targets, label_smoothing=smoothing)
    loss.backward()
    manual_loss = ManualBackward(twin, batch, smoothing).gradients(context, targets)
    assert manual_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert relative_error(q.grad, p.grad) < 1e-5, name
    for (name, b), c in zip(model.named_buffers(), twin.buffers()):
        assert torch.allclose(b.float(), c.float(), rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("options", CONFIGS[2:4], ids=["batchnorm", "direct"])
def test_the_fused_sgd_step_equals_autograd_then_sgd(options):
    torch.manual_seed(1)
    model = MLP(27, **options).double()  # float64: an update is ~1e-4 of its weight, too fine for float32
    twin = copy.deepcopy(model)
    context, targets = torch.randint(27, (16, options["block_size"])), torch.randint(27, (16,))
    F.cross_entropy(model(context), targets).backward()
    manual = ManualBackward(twin, 16)
    manual.forward(context, targets)
    manual.sgd_backward(context, 0.5)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert relative_error(q.detach() - p.detach(), -0.5 * p.grad) < 1e-9, name  # the update, not just weights


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["optim=sgd", "optim=adamw"])
def test_a_manual_run_ends_where_autograd_does_and_is_deterministic(tmp_path, optim):
    args = [optim, "model.norm=batch", "model.layers=2", "model.hidden=32", *FAST, "steps=300", "logger=none"]
    autograd = train_run(compose_config(*args), tmp_path / "autograd")
    manual = train_run(compose_config(*args, "model.backward=manual"), tmp_path / "manual")
    again = train_run(compose_config(*args, "model.backward=manual"), tmp_path / "again")
    assert manual["dev_loss"] == pytest.approx(autograd["dev_loss"], abs=2e-3)
    assert [manual[f"{s}_loss"] for s in ("train", "dev", "test")] == [
        again[f"{s}_loss"] for s in ("train", "dev", "test")
    ]


def test_a_resumed_manual_run_ends_bit_identical(tmp_path):
    cfg = compose_config(
        "optim=sgd",
        "model.backward=manual",
        "steps=60",
        "checkpoint_interval=30",
        "eval_interval=20",
        "log_interval=10",
        "progress=false",
        "logger=none",
    )
    whole = train_run(cfg, tmp_path / "whole")
    resumed = train_run(cfg, tmp_path / "resumed", load_checkpoint(tmp_path / "whole" / "checkpoint.pt", {"state"}))
    assert [whole[f"{s}_loss"] for s in ("train", "dev", "test")] == [
        resumed[f"{s}_loss"] for s in ("train", "dev", "test")
    ]


@pytest.mark.parametrize("option", ["model.dropout=0.1", "model.norm=layer"])
def test_options_the_manual_pass_does_not_cover_are_refused(option):
    with pytest.raises(MakemoreError, match=f"model.backward=manual does not cover {option}"):
        validate(compose_config("model.backward=manual", option))
