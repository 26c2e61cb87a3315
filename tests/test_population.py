"""Populations (hydra/launcher=population): each member's numbers are its solo run's to the last digit, members that
cannot stack are told apart with the reason, a member ends on its own, and a stopped population continues to the
solo runs' losses. The README's population commands run in test_readme.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore import grouping, loop
from makemore.features import Feature
from makemore.loop import Diverged
from makemore.population import train_population
from makemore.rundir import find_runs
from makemore.stacked import distinct_rows
from makemore.train import start, train_run

from helpers import FAST, ROOT, compose_config, read_metrics, run_bash, run_script
from wandb_records import read_run as read_wandb_run

LOSSES = ("train_loss", "dev_loss", "test_loss", "best_dev_loss", "best_dev_step", "steps", "step_to_target")


def quiet(*overrides: str) -> list[str]:
    return [*FAST, "logger=none", "samples=2", *overrides]


def population_and_solo(tmp_path, members: list[list[str]]) -> list[tuple[dict | Exception, dict, str]]:
    """The members trained as one population (in this process) and each on its own: their outcomes, solo metrics,
    and whether their history.csv files agree."""
    shared: dict = {}
    jobs = [start(compose_config(*m), tmp_path / f"member{i}", None, shared) for i, m in enumerate(members)]
    outcomes = train_population(jobs, [None] * len(jobs), [None] * len(jobs), lambda done, tally: None)
    solos = [train_run(compose_config(*m), tmp_path / f"solo{i}") for i, m in enumerate(members)]
    histories = [
        (tmp_path / f"member{i}" / "history.csv").read_text() == (tmp_path / f"solo{i}" / "history.csv").read_text()
        for i in range(len(members))
    ]
    return list(zip(outcomes, solos, histories))


@pytest.mark.parametrize(
    "recipe",
    [
        [],  # the default MLP: AdamW, batch 256, cosine; the hand-written stacked MLP
        ["optim=sgd", "model.init=randn", "batch_size=32"],  # lecture 2's: plain descent, batch 32
        [
            "optim=sgd",
            "optim.momentum=0.9",
            "optim.weight_decay=0.001",
            "label_smoothing=0.1",
        ],  # fused SGD, autograd head
        ["model.layers=2", "model.direct=true", "early_stopping=1", "eval_interval=5", "optim.lr=0.3"],  # stops early
        ["model=trigram_table", "optim=full_batch", "steps=20"],  # the hand-written table, a full batch
        ["model=additive"],
        ["model=gru", "steps=12", "eval_interval=6"],  # torch.func.vmap and autograd, on whole items
        ["model=transformer", "steps=6", "eval_interval=3"],  # vmap, with LayerNorm's native backward per member
        ["ema_decay=0.9", "checkpoint_interval=7"],  # the weights' moving average: loss/dev_ema in history.csv
        ["optim=lion", "optim.weight_decay=0.1"],  # a third optimizer family, decoupled weight decay
    ],
    ids=["mlp", "lecture2", "momentum", "early_stop", "table", "additive", "gru", "transformer", "ema", "lion"],
)
def test_each_member_gets_its_solo_runs_numbers_to_the_last_digit(tmp_path, few_names, recipe):
    members = [quiet(few_names, *recipe, f"seed={seed}") for seed in (1, 2, 3)]
    members[1].append("optim.lr=0.02" if "model=trigram_table" not in recipe else "optim.lr=20")  # its own schedule
    units = grouping.plan(members_of(*members), max_members=16)
    if len(units) > 1:  # vmap's products on this CPU's BLAS round otherwise than a solo run's: the probe saw it
        assert all(re.search(r"stacked (gradients|forward pass) differs? from its solo", u.reason) for u in units)
        pytest.skip(f"the launcher runs these members alone on this machine: {units[0].reason}")
    for outcome, solo, same_history in population_and_solo(tmp_path, members):
        assert isinstance(outcome, dict) and outcome["status"] == "ok"
        assert {k: outcome.get(k) for k in LOSSES} == {k: solo.get(k) for k in LOSSES}
        assert same_history
    for i in range(3):
        mine, theirs = (
            torch.load(tmp_path / f"{who}{i}" / "model.pt", weights_only=True) for who in ("member", "solo")
        )
        assert all(torch.equal(mine["model"][k], theirs["model"][k]) for k in theirs["model"])


class ClippedGradients(Feature):
    """A throwaway training feature, written in this one place: each member's gradients scaled down to a norm of
    at most 0.05 before its update."""

    @staticmethod
    def wanted(settings) -> bool:
        return True

    def before_update(self) -> None:
        for position in range(self.loop.engine.size):
            grads = self.loop.engine.member_grads(position)
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            torch._foreach_mul_(grads, (0.05 / norm).clamp(max=1.0))


def test_a_feature_added_in_one_place_acts_alone_and_in_a_population_alike(tmp_path, few_names, monkeypatch):
    members = [quiet(few_names, "optim=sgd", f"seed={seed}") for seed in (1, 2, 3)]
    plain = population_and_solo(tmp_path / "plain", members)
    monkeypatch.setattr(loop, "FEATURES", [*loop.FEATURES, ClippedGradients])
    clipped = population_and_solo(tmp_path / "clipped", members)
    for (outcome, solo, same_history), (unclipped, _, _) in zip(clipped, plain):
        assert {k: outcome.get(k) for k in LOSSES} == {k: solo.get(k) for k in LOSSES} and same_history
        assert outcome["train_loss"] != unclipped["train_loss"]  # the clip acted, on both sides alike


def test_a_diverging_member_ends_alone_and_the_others_finish(tmp_path, few_names):
    members = [quiet(few_names, "model.hidden=16", f"optim.lr={lr}") for lr in (0.01, 1e6, 0.02)]
    jobs = [start(compose_config(*m), tmp_path / f"member{i}", None, {}) for i, m in enumerate(members)]
    ok1, diverged, ok2 = train_population(jobs, [None] * 3, [None] * 3, lambda done, tally: None)
    assert isinstance(diverged, Diverged) and "lower optim.lr" in str(diverged)
    for outcome, i in ((ok1, 0), (ok2, 2)):
        assert outcome["dev_loss"] == train_run(compose_config(*members[i]), tmp_path / f"solo{i}")["dev_loss"]


def members_of(*commands: list[str]) -> list[grouping.Member]:
    return [grouping.Member(i, f"m{i}", compose_config(*c), 0) for i, c in enumerate(commands)]


def test_members_stack_by_shape_and_the_others_are_told_why(few_names):
    grid = members_of(*([few_names, f"model.emb={e}", f"optim.lr={lr}"] for e in (4, 10) for lr in (0.01, 0.03)))
    units = grouping.plan(grid, max_members=16)
    assert [[m.name for m in u.members] for u in units] == [["m0", "m1"], ["m2", "m3"]]
    assert units[0].differ == ["optim.lr"] and units[0].apart == ["model.emb"]
    lines = grouping.lines(units)
    assert lines[0].startswith("population 1 of 2: 2 members stacked (differing in optim.lr; apart from the others")

    full = grouping.plan(members_of(*([few_names, f"seed={s}"] for s in (1, 2, 3))), max_members=2)
    assert isinstance(full[0], grouping.Population) and "max_members=2" in full[1].reason

    alone = {
        "model=wavenet": "BatchNorm keeps running statistics",
        "model=bigram_count": "a counting model takes no optimizer steps",
        "model.dropout=0.1": "draws random numbers (dropout)",
        "model.backward=manual": "model.backward=manual fuses one model's SGD updates",
    }
    for override, reason in alone.items():
        units = grouping.plan(members_of(*([few_names, override, f"seed={s}"] for s in (1, 2))), max_members=16)
        assert all(isinstance(u, grouping.Alone) and reason in u.reason for u in units), override


def test_a_trials_seeds_share_one_worker_process_and_other_members_are_dealt_round_robin(few_names):
    """An Optuna trial's seeds stop together at the step its pruner judges their mean: they train in one process."""
    from hydra_plugins.makemore_population.population_launcher import trials

    searched = members_of(*([few_names, f"seed={s}", f"+trial={t}"] for t in (0, 1, 2) for s in (1, 2)))
    [population] = grouping.plan(searched, max_members=16)
    assert [[m.name for m in group] for group in trials(population)] == [["m0", "m1"], ["m2", "m3"], ["m4", "m5"]]
    [population] = grouping.plan(members_of(*([few_names, f"seed={s}"] for s in (1, 2, 3))), max_members=16)
    assert [[m.name for m in group] for group in trials(population)] == [["m0"], ["m1"], ["m2"]]


def test_plain_descent_adds_an_element_the_same_wherever_it_lies():
    """The stacked optimizer steps every member's parameters with one add when they share their learning rate; a
    solo run adds each tensor alone: the same only if the add's vectorised and leftover elements round alike."""
    torch.manual_seed(0)
    p, g = torch.randn(10_007), torch.randn(10_007)
    whole = p.clone().add_(g, alpha=-0.0123)
    for offset in (1, 5, 13, 31, 4_099):
        assert torch.equal(p[offset:].clone().add_(g[offset:], alpha=-0.0123), whole[offset:])


@pytest.mark.parametrize("block_size", [1, 3, 16])  # 16: 27^16 is past an int64: torch.unique's own way
def test_the_distinct_contexts_are_torch_uniques_rows_and_inverse(block_size):
    torch.manual_seed(block_size)
    x = torch.randint(27, (3_000, block_size))
    x[1_500:] = x[:1_500]  # every row twice
    rows, inverse = distinct_rows(x, 27)
    expected_rows, expected_inverse = torch.unique(x, dim=0, return_inverse=True)
    assert torch.equal(rows, expected_rows) and torch.equal(inverse, expected_inverse)


@pytest.mark.slow
def test_a_stopped_population_continues_to_the_solo_runs_losses(project):
    command = ["-m", "model.hidden=32", "seeds=4", "steps=1500", "checkpoint_interval=100", "progress=false"]
    solo = project / "solo"
    made = run_script("train.py", *command, "logger=none", f"hydra.sweep.dir={solo}", cwd=project)
    assert made.returncode == 0, made.stderr[-2000:]
    sweep = project / "population"
    launcher = ["hydra/launcher=population", "hydra.launcher.workers=2"]  # a signal the workers must be told of
    args = ["train.py", *command, *launcher, "logger=none", f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen([sys.executable, *args], stderr=subprocess.PIPE, text=True, cwd=project)
    deadline = time.monotonic() + 120
    while len(list(sweep.rglob("checkpoint.pt"))) < 4:  # every member has trained a little, in both workers
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # to the sweep's process only: it stops its workers
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    statuses = [json.loads((d / "metrics.json").read_text())["status"] for d in find_runs(sweep)]
    assert statuses.count("interrupted") >= 1, statuses
    [again] = [line.split("continue it with: ")[1] for line in stderr.splitlines() if "continue it with:" in line]
    continued = run_bash(again, project)
    assert continued.returncode == 0, continued.stderr[-2000:]
    for member in find_runs(solo):
        mine, theirs = read_metrics(sweep / member.name), read_metrics(member)
        assert {k: mine.get(k) for k in LOSSES} == {k: theirs.get(k) for k in LOSSES}
        assert (sweep / member.name / "history.csv").read_text() == (member / "history.csv").read_text()
        record = json.loads((sweep / member.name / ".hydra" / "population.json").read_text())
        assert record["size"] == 4 and record["members"][record["index"]] == member.name


@pytest.mark.hydra_versions
def test_the_launcher_refuses_a_nonsense_setting_before_writing(tmp_path):
    result = run_script(
        str(ROOT / "train.py"),
        "-m",
        "hydra/launcher=population",
        "hydra.launcher.workers=0",
        "seeds=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: hydra.launcher.workers=0 is not allowed: it must be at least 1, or null for its default"
    )
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
@pytest.mark.hydra_versions
def test_members_in_two_worker_processes_log_each_into_its_own_runs_under_this_hydra(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=population", "hydra.launcher.workers=2", "seeds=2", "logger=all", *FAST]
    result = run_script(str(ROOT / "train.py"), *args, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    members = find_runs(sweep)
    records = [json.loads((d / ".hydra" / "population.json").read_text()) for d in members]
    assert [(r["size"], r["processes"], r["threads"]) for r in records] == [(2, 2, 1)] * 2
    for member in members:  # its own TensorBoard events and its own W&B run, with its own losses
        metrics = read_metrics(member)
        events = EventAccumulator(str(member))
        events.Reload()
        assert events.Scalars("loss/dev")[-1].value == pytest.approx(metrics["dev_loss"], rel=1e-6)
        [log] = member.glob("wandb/offline-run-*/run-*.wandb")
        wandb_run = read_wandb_run(log)
        assert wandb_run["summary"]["loss/dev"] == pytest.approx(metrics["dev_loss"])
        assert (wandb_run["run"].run_group, wandb_run["run"].display_name) == (sweep.name, member.name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sweep", [["sweep=mlp_grid", "seeds=4"], ["sweep=optuna_mlp", "hydra.sweeper.n_jobs=4"]], ids=["grid", "optuna"]
)
def test_the_plan_is_printed_and_nothing_is_written(tmp_path, sweep):
    result = run_script(
        str(ROOT / "sweep.py"), *sweep, "hydra/launcher=population", "hydra.launcher.plan=true", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    populations = [
        int(re.match(r"population \d+ of \d+: (\d+) members stacked", line)[1])
        for line in lines
        if line.startswith("population ")
    ]
    alone = [line for line in lines if line.startswith("alone: ") and "each changes its tensors" in line]
    assert sum(populations) + len(alone) == (32 if "seeds=4" in sweep else 4)  # 8 shapes x 4 seeds; Optuna's batch
    assert populations == ([4] * 8 if "seeds=4" in sweep else [])  # optuna_mlp's trials differ in shape
    estimates = [line for line in lines if line.startswith("  ") and " member-steps in " in line]
    assert len(estimates) == len(populations) + len(alone)
    assert re.fullmatch(r"plan: [\d,]+ member-steps, ~[\d,]+ s of wall time \(estimated\); nothing was run", lines[-1])
    shown = "plan: 96,000 member-steps" if "seeds=4" in sweep else "plan: 8,000 member-steps"  # docs/populations.md
    assert lines[-1].startswith(shown)
    assert list(tmp_path.iterdir()) == []  # no outputs/, no sweep directory, no study


@pytest.mark.slow
def test_fail_fast_ends_the_sweep_at_the_first_failed_member_and_the_same_command_continues(tmp_path):
    args = ["-m", "hydra/launcher=population", "model.emb=10,abc,4", *quiet(), f"hydra.sweep.dir={tmp_path / 's'}"]
    result = run_script(str(ROOT / "train.py"), *args, "hydra.launcher.fail_fast=true")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: emb=abc failed: model.emb=abc is not allowed: model.emb must be an integer; the sweep stopped there "
        "(hydra.launcher.fail_fast=true), keeping what finished: continue it with "
    )
    assert read_metrics(tmp_path / "s" / "emb=10")["status"] == "ok" and not (tmp_path / "s" / "emb=4").exists()
    continued = run_bash(last.split("continue it with ")[1], ROOT)  # the rest runs; the failure is kept, and counted
    assert continued.returncode == 1 and read_metrics(tmp_path / "s" / "emb=4")["status"] == "ok"
