"""Optimizers and schedules: the lr each schedule promises, weight decay's groups, the presets' settings."""

import math

import pytest
import torch

from makemore.models import MLP
from makemore.optim import build_optimizer
from makemore.schema import validate
from makemore.train import train_run

from helpers import FAST, compose_config


def lrs(*overrides, steps=100):
    cfg = compose_config(*overrides, f"steps={steps}")
    _, lr_at = build_optimizer(torch.nn.Linear(2, 2), cfg.optim, cfg.schedule, steps)
    return [lr_at(step) for step in range(steps)]


def test_each_schedule_gives_the_lr_it_promises():
    assert lrs("optim=sgd") == [0.1] * 50 + [0.1 * 0.1] * 50  # the lectures': x0.1 at half
    assert lrs("optim=full_batch", "schedule=constant") == [50.0] * 100
    cosine = lrs("optim=sgd", "schedule=cosine")  # warmup 2 steps, then a half cosine to 0.05 x lr
    assert cosine[:2] == [0.05, 0.1]
    assert cosine[2 + 49] == pytest.approx(0.1 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 49 / 98))))
    adamw = lrs()  # the default: adamw 0.01 with warmup and a half cosine to 0.05 x lr
    assert adamw[:2] == [0.005, 0.01] and adamw[-1] == pytest.approx(
        0.01 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 97 / 98)))
    )
    linear = lrs("schedule=linear")  # adamw 0.01: warmup 2 steps, then a straight line to 0
    assert linear[:2] == [0.005, 0.01] and linear[2 + 24] == pytest.approx(0.01 * (1 - 24 / 98))
    exponential = lrs("optim=sgd", "schedule=exponential", "optim.lr=0.001", "schedule.lr_end=1.0", steps=4)
    assert exponential == pytest.approx([0.001, 0.01, 0.1, 1.0])
    assert lrs("optim=sgd", "schedule=exponential", "optim.lr=0.001", "schedule.lr_end=1.0", steps=2) == [0.001, 1.0]


def test_any_schedule_runs_with_any_optimizer(tmp_path, few_names):
    for i, overrides in enumerate([("optim=sgd", "schedule=cosine"), ("optim=adamw", "schedule=step")]):
        metrics = train_run(compose_config(*overrides, *FAST, "logger=none", few_names), tmp_path / str(i))
        assert metrics["status"] == "ok"


def test_weight_decay_falls_on_weights_and_embeddings_only():
    from makemore.optim import param_groups

    model = MLP(27, 3, norm="batch", layers=2)
    decayed, kept = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and kept["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decayed["params"]) == [
        "embedding.weight",
        "hidden.0.weight",
        "hidden.3.weight",
        "output.weight",
    ]  # every matrix
    assert sorted(names[id(p)] for p in kept["params"]) == [
        "hidden.1.bias",
        "hidden.1.weight",
        "hidden.4.bias",
        "hidden.4.weight",
        "output.bias",
    ]  # norms, biases
    schedule = compose_config().schedule
    decaying = build_optimizer(model, compose_config("optim.weight_decay=0.1").optim, schedule, 10)[0]
    assert [g["weight_decay"] for g in decaying.param_groups] == [0.1, 0.0]
    undecayed = build_optimizer(model, compose_config("optim.weight_decay=0").optim, schedule, 10)[0]
    assert [g["weight_decay"] for g in undecayed.param_groups] == [0.0]  # not AdamW's own default of 0.01


def test_optimizers_take_their_hyperparameters_from_the_config():
    adamw = compose_config("optim=adamw", "optim.betas=[0.5,0.6]").optim
    sgd = compose_config("optim=sgd", "optim.momentum=0.7").optim
    schedule = compose_config().schedule
    group = build_optimizer(MLP(27, 3), adamw, schedule, 10)[0].param_groups[0]
    assert group["betas"] == (0.5, 0.6) and group["lr"] == adamw.lr
    group = build_optimizer(MLP(27, 3), sgd, schedule, 10)[0].param_groups[0]
    assert group["momentum"] == 0.7 and group["lr"] == sgd.lr


def test_full_batch_is_200_steps_of_lr_50_on_the_whole_split():
    cfg = validate(compose_config("model=trigram_table", "optim=full_batch"))
    assert (cfg.batch_size, cfg.steps, cfg.optim.lr, cfg.schedule.name) == (None, 200, 50.0, "constant")
