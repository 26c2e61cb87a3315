"""Sweeps through Hydra's real launchers and sweepers, the leaderboard, report mode and W&B offline."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore.hydra_versions import VERSION_BASE
from makemore.models import OPTIONS
from makemore.rundir import find_runs

from helpers import FAST, ROOT, read_metrics, run_bash, run_script, tree_hashes
from wandb_records import read_run as read_wandb_run

SMALL = FAST


def multirun(sweep_dir, *args, script="train.py"):
    result = run_script(str(ROOT / script), *args, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def member_losses(sweep_dir):
    return {d.name: read_metrics(d)["dev_loss"] for d in find_runs(sweep_dir)}


def leaderboard_rows(sweep_dir):
    with open(sweep_dir / "leaderboard.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_three_member_multirun_names_members_and_ends_with_a_leaderboard(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = multirun(sweep_dir, "-m", "model=trigram_table,additive,mlp", *SMALL)
    names = ["trigram_table", "additive", "mlp"]  # a group's choice by its option; no constant steps=40
    assert sorted(member_losses(sweep_dir)) == sorted(names)
    rows = leaderboard_rows(sweep_dir)
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    assert [float(row["dev"]) for row in rows] == sorted(float(row["dev"]) for row in rows)
    assert {row["model"] for row in rows} == {"trigram_table", "additive", "mlp"}
    assert all(row["rerun"].startswith("python train.py rerun=") for row in rows)
    assert (sweep_dir / "leaderboard.md").read_text().count("\n") == 5
    assert (sweep_dir / "leaderboard.png").stat().st_size > 10_000
    assert "leaderboard of 3 runs" in result.stdout


@pytest.mark.slow
def test_failing_member_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep_dir = tmp_path / "sweep"
    multirun(sweep_dir, "-m", "optim.lr=0.01,1e6", "model.hidden=16", *SMALL)
    rows = leaderboard_rows(sweep_dir)
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("diverged: loss ")
    assert not any((d / "model.pt").exists() for d in find_runs(sweep_dir) if "1e6" in d.name or "1000000" in d.name)


@pytest.mark.parametrize("sweep", ["models", "mlp_grid", "lr_finder", "optuna_mlp", "best_search"])
def test_every_named_sweep_composes_and_passes_the_schema(sweep):
    from hydra import compose, initialize_config_dir
    from hydra.core.plugins import Plugins

    from makemore.schema import validate

    Plugins.instance()  # imports every plugin, its schemas with it, as Hydra's app does before composing
    with initialize_config_dir(config_dir=str(ROOT / "conf"), **VERSION_BASE):
        cfg = compose("sweep", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    validate(cfg)


def test_the_slurm_launcher_composes_with_one_core_per_member():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), **VERSION_BASE):
        cfg = compose("sweep", overrides=["sweep=mlp_grid", "hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.cpus_per_task, launcher.mem_gb, launcher.timeout_min) == (1, 4, 60)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["hydra/launcher=joblib", "hydra/launcher=submitit_local"])
def test_parallel_launchers_give_the_same_results_as_the_basic_one(tmp_path, launcher):
    args = ["-m", "model=additive,mlp", *SMALL]
    multirun(tmp_path / "basic", *args)
    extra = ["hydra.launcher.n_jobs=2"] if "joblib" in launcher else []
    multirun(tmp_path / "parallel", *args, launcher, *extra)
    assert member_losses(tmp_path / "parallel") == member_losses(tmp_path / "basic")
    assert len(leaderboard_rows(tmp_path / "parallel")) == 2


@pytest.mark.slow
def test_report_mode_summarises_every_run_under_a_directory(tmp_path):
    multirun(tmp_path / "outputs" / "a", "-m", "model=additive,mlp", *SMALL)
    result = run_script(str(ROOT / "train.py"), f"hydra.run.dir={tmp_path / 'outputs' / 'single'}", *SMALL)
    assert result.returncode == 0
    result = run_script(str(ROOT / "sweep.py"), f"report={tmp_path / 'outputs'}")
    assert result.returncode == 0, result.stderr
    assert "leaderboard of 3 runs" in result.stdout
    assert len(leaderboard_rows(tmp_path / "outputs")) == 3


@pytest.mark.slow
def test_wandb_offline_run_round_trips(tmp_path):
    sweep_dir = tmp_path / "sweep"
    multirun(sweep_dir, "-m", "logger=all", "model.emb=4,6", *SMALL)
    member = find_runs(sweep_dir)[0]
    logs = list(member.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    run = read_wandb_run(logs[0])
    metrics = read_metrics(member)
    dev_points = [row["loss/dev"] for row in run["history"] if "loss/dev" in row]
    assert dev_points[-1] == pytest.approx(metrics["dev_loss"])
    assert run["summary"]["loss/test"] == pytest.approx(metrics["test_loss"])
    assert run["config"]["model.emb"] in (4, 6)
    session = hparams_content(member)["_hparams_/session_start_info"].session_start_info.hparams
    assert set(run["config"]) - {"_wandb", "provenance"} == set(
        session
    )  # the same experiment-defining config as TensorBoard's HParams
    assert {"loss/dev", "loss/train", "run/params", "run/train_seconds", "run/target_met", "run/best_dev_loss"} <= set(
        run["summary"]
    )
    assert run["run"].run_group == sweep_dir.name  # sweep members are grouped by sweep
    assert run["run"].display_name == member.name  # the name TensorBoard and the leaderboard show
    assert run["summary"]["target"] == 2.2
    [chart] = files_of(member).glob("media/table/loss/dev against the target_table_*.table.json")
    table = json.loads(chart.read_text())  # the chart's data: the run's dev curve and the target beside it
    lines = {
        key: [(step, value) for step, key_, value in table["data"] if key_ == key] for key in ("loss/dev", "target 2.2")
    }
    assert lines["loss/dev"][-1] == (metrics["steps"], pytest.approx(metrics["dev_loss"]))
    assert {value for _, value in lines["target 2.2"]} == {2.2} and len(lines["target 2.2"]) == len(lines["loss/dev"])
    files = files_of(member)  # readable as W&B writes them for an online run
    readable = yaml.safe_load((files / "config.yaml").read_text())
    assert readable["model.emb"] == {"value": run["config"]["model.emb"]} and "provenance" in readable
    summary = json.loads((files / "wandb-summary.json").read_text())
    assert summary["loss/dev"] == pytest.approx(metrics["dev_loss"])
    assert list(member.glob("events.out.tfevents.*"))  # logger=all writes TensorBoard too


def files_of(member):
    [files] = member.glob("wandb/offline-run-*/files")
    return files


@pytest.mark.slow
def test_lr_finder_plots_loss_against_lr(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = multirun(sweep_dir, "sweep=lr_finder", "steps=200", "progress=false", script="sweep.py")
    assert (sweep_dir / "lr_finder.png").stat().st_size > 10_000
    assert "suggested lr" in result.stdout


def test_sweep_models_puts_every_model_family_at_its_budget():
    from helpers import compose_config, group_options

    swept = compose_config("sweep=models", return_hydra_config=True).hydra.sweeper.params.budget.split(",")
    assert swept == list(OPTIONS)  # every built-in model, in the registry's order
    assert sorted(swept) == group_options("model") == group_options("budget")
    for family in swept:
        composed = compose_config(f"budget={family}")
        assert composed.model.name == family and composed.steps == (OPTIONS[family].budget_steps or 3000)
        assert composed.optim.name == (OPTIONS[family].budget_optim or "adamw")


def test_the_leaderboard_picture_plots_dev_against_training_seconds(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from makemore.plots import leaderboard_figure

    figure = leaderboard_figure(
        {"a": [(10, 2.3), (20, 2.2)]}, {"a": (3.0, 2.2), "b": (30.0, 2.1), "c": (0.0, 2.4)}, 2.2
    )
    cost_axes = figure.axes[1]
    assert cost_axes.get_xlabel().startswith("training seconds") and cost_axes.get_xscale() == "log"
    points = [tuple(c.get_offsets()[0]) for c in cost_axes.collections]
    assert points == [(3.0, 2.2), (30.0, 2.1), (1e-3, 2.4)]  # a counting run's ~0 s is drawn at the axis' floor


def hparams_content(directory):
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(directory))
    events.Reload()
    return {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in events.PluginTagToContent("hparams").items()
    }


@pytest.mark.slow
def test_tensorboard_hparams_of_a_sweep_open_on_the_swept_keys_and_the_metrics(tmp_path):
    sweep_dir = tmp_path / "sweep"
    multirun(sweep_dir, "-m", "model=mlp,trigram_count,additive", "model.block_size=2,3", *SMALL)
    experiment = hparams_content(sweep_dir / "dashboard")["_hparams_/experiment"].experiment
    columns = [h.name for h in experiment.hparam_infos]
    swept = [h.name for h in experiment.hparam_infos if h.differs]
    assert swept == columns[:2] == ["model.name", "model.block_size"]  # what was swept: first, ticked
    assert "model.alpha" in columns  # differs between the models, unswept: a column, unticked
    assert not {"seed", "data.path", "batch_size"} & set(columns)  # the same everywhere: no column
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics[:5] == ["loss/dev", "loss/train", "run/params", "run/train_seconds", "run/target_met"]
    infrastructure = (
        "device",
        "threads",
        "samples",
        "progress",
        "eval_interval",
        "log_interval",
        "logger.",
        "rerun",
        "resume",
        "trial",
        "checkpoint_interval",
    )
    for run_dir in find_runs(sweep_dir):
        session = hparams_content(run_dir)["_hparams_/session_start_info"].session_start_info.hparams
        assert not [k for k in session if k.startswith(infrastructure)]
        assert "_hparams_/experiment" not in hparams_content(run_dir)  # the sweep's experiment alone sets the columns
        events = EventAccumulator(str(run_dir))
        events.Reload()
        picture = {"mlp": "model/embeddings", "trigram_count": "model/next_token", "additive": "model/weights"}
        assert events.Tags()["images"] == [picture[session["model.name"].string_value]]  # every model has one
        if "trigram_count" in run_dir.name:  # a counting run says what happened: no steps, no optimizer
            assert session["steps"].number_value == 0 and session["optim.name"].string_value == "none (counted)"
            assert not [k for k in session if k.startswith(("optim.lr", "schedule.", "batch_size"))]
            assert "model.alpha" in session


@pytest.mark.slow
def test_an_interrupted_grid_sweep_continues_to_the_leaderboard_of_an_uninterrupted_one(tmp_path):
    signum = signal.SIGTERM  # a scheduler's; Ctrl-C's SIGINT takes the same path (test_reliability stops a run with it)
    grid = [
        "-m",
        "model.emb=4,8",
        "model.hidden=20,40",
        "steps=3000",
        "eval_interval=500",
        "log_interval=100",
        "checkpoint_interval=200",
        "progress=false",
        "logger=none",
        "samples=2",
    ]
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *grid, f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(sweep_dir.glob("emb=4 hidden=40/checkpoint.pt")):  # the first member done, the second part way
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr[-2000:]  # 130 for SIGINT, 143 for SIGTERM
    members = sorted(d.name for d in sweep_dir.iterdir() if d.is_dir())
    assert (
        members == ["emb=4 hidden=20", "emb=4 hidden=40"]
        and read_metrics(sweep_dir / members[1])["status"] == "interrupted"
    )
    finished = tree_hashes(sweep_dir / members[0])
    command = stderr.strip().splitlines()[-1].split("continue it with: ")[1]
    result = run_bash(command, ROOT)  # the printed command, pasted into bash
    assert result.returncode == 0, result.stderr[-3000:]
    assert tree_hashes(sweep_dir / members[0]) == finished  # kept, not rerun, not touched
    assert f"{members[0]}: ended earlier (ok), kept as it is" in result.stdout
    straight = tmp_path / "straight"
    multirun(straight, *grid)
    interrupted = {(r["run"], r["train"], r["dev"], r["test"]) for r in leaderboard_rows(sweep_dir)}
    uninterrupted = {(r["run"], r["train"], r["dev"], r["test"]) for r in leaderboard_rows(straight)}
    assert interrupted == uninterrupted and len(interrupted) == 4  # loss for loss


@pytest.mark.slow
@pytest.mark.hydra_versions
def test_a_different_sweep_into_a_sweep_directory_is_refused(tmp_path):
    sweep_dir = tmp_path / "sweep"
    multirun(sweep_dir, "-m", "model=additive,trigram_count", "steps=5", "progress=false", "logger=none")
    before = tree_hashes(sweep_dir)
    result = run_script(str(ROOT / "train.py"), "-m", "model=additive,mlp", "steps=5", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 1 and "holds another sweep" in result.stderr and tree_hashes(sweep_dir) == before


@pytest.mark.slow
def test_seeds_runs_each_config_over_several_seeds_and_the_leaderboard_groups_them(tmp_path):
    import statistics

    sweep_dir = tmp_path / "sweep"
    multirun(sweep_dir, "model.emb=4,8", "seeds=3", "seed=7", *SMALL, "logger=none")
    runs = find_runs(sweep_dir)
    assert len(runs) == 6 and len({d.name for d in runs}) == 6  # every member keeps its own directory
    groups = {}
    for run_dir in runs:
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        emb = "4" if "model.emb=4" in overrides else "8"
        groups.setdefault(emb, []).append(read_metrics(run_dir)["dev_loss"])
    assert {emb: len(devs) for emb, devs in groups.items()} == {"4": 3, "8": 3}
    with open(sweep_dir / "leaderboard_groups.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ensembles = [row for row in rows if not row["rank"]]
    rows = [row for row in rows if row["rank"]]
    assert [e["group"] for e in ensembles] == [f"{row['group']}: ensemble of 3" for row in rows]
    for ensemble, row in zip(ensembles, rows):  # each group's averaged probabilities, scored as by hand here
        members = [
            d for d in runs if f"model.emb={row['group'].split('=')[1]}" in (d / ".hydra/overrides.yaml").read_text()
        ]
        assert float(ensemble["dev mean"]) == pytest.approx(averaged_dev_loss(members), abs=5e-5)
    means = {emb: statistics.fmean(devs) for emb, devs in groups.items()}
    assert [row["group"] for row in rows] == [f"emb={emb}" for emb in sorted(means, key=means.get)]  # by mean
    for row in rows:
        devs = groups[row["group"].split("=")[1]]
        assert row["n"] == "3" and row["seeds"] == "7 8 9"
        assert float(row["dev mean"]) == pytest.approx(statistics.fmean(devs), abs=5e-5)
        assert float(row["dev std"]) == pytest.approx(statistics.stdev(devs), abs=5e-5)
    table = (sweep_dir / "leaderboard.md").read_text()
    assert f"{rows[0]['group']} beats {rows[1]['group']} by" in table and "seed-to-seed spread" in table


def averaged_dev_loss(run_dirs) -> float:
    """-log of the mean probability the runs' models give each next character of the dev split."""
    import torch

    from makemore.checkpoint import load_model
    from makemore.data import load_dataset

    models = [load_model(d / "model.pt")[0] for d in run_dirs]
    dev = load_dataset(None, 3)
    with torch.no_grad():
        probability = sum(torch.softmax(m(dev.X["dev"]).double(), 1) for m in models) / len(models)
    return -probability[torch.arange(len(dev.Y["dev"])), dev.Y["dev"]].log().mean().item()


def test_seeds_must_be_a_positive_integer(tmp_path):
    result = run_script(str(ROOT / "train.py"), "seeds=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: seeds=0 is not allowed: seeds must be a positive integer, with seed= (the first seed) a single "
        "integer, e.g. seeds=3 seed=42"
    )
    assert not (tmp_path / "run").exists()


SLOW_MODEL = '''import time

from makemore.models import MLP


class Slow(MLP):
    """The MLP, 4 ms slower a step: a run whose length in seconds does not depend on the machine's load."""

    def forward(self, context):
        time.sleep(0.004)
        return super().forward(context)
'''


@pytest.mark.slow
def test_a_scheduler_timeout_saves_requeues_and_resumes_to_the_uninterrupted_losses(tmp_path):
    """submitit's local executor, as SLURM's launcher runs it, with a 1-minute timeout: its SIGUSR2 comes 30 s
    before, at ~half of this ~40 s run; the run saves at that step and the requeued job resumes from it."""
    (tmp_path / "slow_model.py").write_text(SLOW_MODEL)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = ["model._target_=slow_model.Slow", "steps=8000", "eval_interval=500", "log_interval=100"]
    run += ["checkpoint_interval=0", "logger=none", "progress=false"]  # no checkpoint but the signal's
    uninterrupted = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *run, f"hydra.run.dir={tmp_path / 'straight'}"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sweep_dir = tmp_path / "sweep"
    launcher = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1"]
    result = run_script(str(ROOT / "train.py"), *launcher, *run, f"hydra.sweep.dir={sweep_dir}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert uninterrupted.wait(300) == 0, uninterrupted.stderr.read()[-3000:]

    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*_log.*"))
    saved = re.search(r"error: SIGUSR2 at step (\d+): checkpoint saved", logs)
    assert saved and 0 < int(saved.group(1)) < 8000, logs[-3000:]  # the timeout's warning came mid-run
    assert "Requeued job" in logs
    [member] = find_runs(sweep_dir)
    assert read_metrics(member)["status"] == "ok" and read_metrics(member)["steps"] == 8000
    losses = ("train_loss", "dev_loss", "test_loss")
    straight = tmp_path / "straight"
    assert [read_metrics(member)[k] for k in losses] == [read_metrics(straight)[k] for k in losses]
    assert (member / "history.csv").read_text() == (straight / "history.csv").read_text()  # no step lost or repeated
