"""Optimizers and schedules: the lr each schedule promises, weight decay's groups, the presets' settings."""

import math
import re

import pytest
import torch

from makemore.models import MLP
from makemore.optimizers import build_optimizer, param_groups
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


def test_lion_steps_by_the_sign_of_its_interpolated_momentum_with_decoupled_decay():
    """Chen et al. 2023, Algorithm 2, written out: c = b1 m + (1 - b1) g; p -= lr (sign(c) + wd p);
    m = b2 m + (1 - b2) g."""
    torch.manual_seed(0)
    model = MLP(27, 3, emb=4, hidden=16)
    p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = compose_config("optim=lion", "optim.lr=0.01", "optim.weight_decay=0.5", "optim.betas=[0.8,0.95]")
    optimizer, _ = build_optimizer(model, cfg.optim, cfg.schedule, 10)
    grads = [{n: torch.randn_like(p) for n, p in model.named_parameters()} for _ in range(3)]
    for step in grads:
        for n, p in model.named_parameters():
            p.grad = step[n].clone()
        optimizer.step()
    for n, p in model.named_parameters():
        decay = 0.5 if p.dim() >= 2 else 0.0  # weights and embeddings only
        expected, m = p0[n].clone(), torch.zeros_like(p)
        for step in grads:
            g = step[n]
            expected -= 0.01 * (torch.sign(0.8 * m + 0.2 * g) + decay * expected)
            m = 0.95 * m + 0.05 * g
        assert torch.allclose(p.detach(), expected, atol=1e-6), n
        assert torch.allclose(optimizer.state[p]["exp_avg"], m, atol=1e-6), n


ADAGRAD = '''
"""A user's own optimizer family, torch's Adagrad: no update of its own, so a run alone takes torch.optim's step."""
from dataclasses import dataclass

import torch

from makemore.optimizers import Optimizer


@dataclass
class AdagradConfig:
    name: str
    lr: float = 0.05
    weight_decay: float = 0.0


class Adagrad(Optimizer):
    Config = AdagradConfig

    @staticmethod
    def build(groups, cfg):
        return torch.optim.Adagrad(groups, lr=cfg.lr)
'''


def test_a_users_own_optimizer_trains_and_its_members_run_alone_told_why(tmp_path, few_names, monkeypatch):
    from omegaconf import OmegaConf, open_dict

    from makemore import grouping
    from makemore.errors import MakemoreError

    (tmp_path / "my_optimizers.py").write_text(ADAGRAD)
    monkeypatch.syspath_prepend(str(tmp_path))

    def adagrad(*overrides, target="my_optimizers.Adagrad"):
        cfg = compose_config(*FAST, "logger=none", few_names, *overrides)
        with open_dict(cfg):
            cfg.optim = OmegaConf.create({"_target_": target, "name": "adagrad", "lr": 0.05, "weight_decay": 0.0})
        return cfg

    metrics = train_run(adagrad(), tmp_path / "alone")
    assert metrics["status"] == "ok" and metrics["train_loss"] < 3.0  # it trains (uniform guessing: 3.30)
    units = grouping.plan([grouping.Member(i, f"m{i}", adagrad(f"seed={i}"), 0) for i in range(2)], max_members=16)
    assert all(isinstance(u, grouping.Alone) for u in units)
    assert "optim=adagrad has no stacked step (Adagrad leaves Optimizer.update unwritten)" in units[0].reason
    with pytest.raises(MakemoreError, match=r"^optim._target_=my_optimizers.Missing cannot be imported"):
        validate(adagrad(target="my_optimizers.Missing"))
    with pytest.raises(MakemoreError, match=r"^optim._target_=my_optimizers.AdagradConfig is not an optimizer family"):
        validate(adagrad(target="my_optimizers.AdagradConfig"))


def test_the_readmes_optim_row_states_each_options_own_numbers():
    from makemore.optimizers import OPTIONS

    from helpers import ROOT

    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `optim` |"))
    nodes = {name: OPTIONS[name].node(name) for name in OPTIONS}
    assert sorted(re.findall(r"`(\w+)` \(lr", row)) == sorted(OPTIONS)
    for name, node in nodes.items():
        lr = f"{node['optim']['lr']:g}"
        batch = node.get("batch_size", compose_config().batch_size)
        stated = re.search(rf"`{name}` \(lr ([\d.]+)(?:, batch (\d+))?", row)
        assert stated.group(1) == lr, name
        assert stated.group(2) is None or int(stated.group(2)) == batch, name
    assert "200 steps on the whole split" in row and nodes["full_batch"]["steps"] == 200
    assert nodes["full_batch"]["batch_size"] is None
