"""Sweeps through Hydra's real launchers and sweepers, the leaderboard, report mode and W&B offline."""

import csv
import json

import pytest

from conftest import FAST, ROOT, read_metrics, run_script
from makemore.report import find_runs, suggest_lr, write_report
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
    assert sorted(member_losses(sweep_dir)) == [f"{i}_model={m},steps=40" for i, m in enumerate(["trigram_table", "additive", "mlp"])]
    rows = leaderboard_rows(sweep_dir)
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    assert [float(row["dev"]) for row in rows] == sorted(float(row["dev"]) for row in rows)
    assert {row["model"] for row in rows} == {"trigram_table", "additive", "mlp"}
    assert all(row["rerun"].startswith("python train.py 'rerun=\"") for row in rows)  # quoted: = and , in names
    assert (sweep_dir / "leaderboard.md").read_text().count("\n") == 5
    assert (sweep_dir / "leaderboard.png").stat().st_size > 10_000
    assert "leaderboard of 3 runs" in result.stdout


def fake_run(root, name, overrides, **metrics):
    """A run directory as train.py leaves it, for testing the ranking alone."""
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_leaderboard_ranks_by_dev_loss_and_puts_failures_last(tmp_path, capsys):
    ok = dict(status="ok", train_loss=2.0, test_loss=2.2, params=100, steps=10, train_seconds=1.5, target=2.2)
    fake_run(tmp_path, "slow", ["model.emb=4", "seed=1"], dev_loss=2.31, target_met=False, **ok)
    fake_run(tmp_path, "best", ["model.emb=16", "seed=1"], dev_loss=2.15, target_met=True, **ok)
    fake_run(tmp_path, "broken", ["model.emb=8", "seed=1"], status="diverged", error="loss became nan by step 10")
    fake_run(tmp_path, "middle", ["model.emb=8", "seed=1"], dev_loss=2.20001, target_met=False, **ok)
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "metrics.json").write_text("{not json")
    with pytest.warns(UserWarning, match="skipping unreadable run"):
        rows = write_report(tmp_path)
    assert [(r["rank"], r["run"], r["dev"]) for r in rows] == [
        (1, "best", "2.1500"), (2, "middle", "2.2000"), (3, "slow", "2.3100"), ("-", "broken", "")
    ]
    assert [r["dev<2.2"] for r in rows] == ["✓", "✗", "✗", "✗"]
    assert rows[3]["status"] == "diverged: loss became nan by step 10"
    assert "model.emb" in rows[0] and "seed" not in rows[0]  # only overrides that differ get a column
    assert rows[0]["model.emb"] == "16" and rows[0]["params"] == 100 and rows[0]["seconds"] == "1.5"
    assert "leaderboard of 4 runs" in capsys.readouterr().out


@pytest.mark.slow
def test_failing_member_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep_dir = tmp_path / "sweep"
    multirun(sweep_dir, "-m", "optim.lr=0.01,1e6", "model.hidden=16", *SMALL)
    rows = leaderboard_rows(sweep_dir)
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("diverged: loss ")
    assert not any((d / "model.pt").exists() for d in find_runs(sweep_dir) if "1e6" in d.name or "1000000" in d.name)


@pytest.mark.slow
def test_optuna_sweep_of_three_trials_in_sqlite_storage(tmp_path):
    import optuna

    sweep_dir, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'optuna.db'}"
    result = multirun(sweep_dir, "sweep=optuna_mlp", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}",
                      *SMALL, script="sweep.py")
    assert len(find_runs(sweep_dir)) == 3
    best = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_value" in best and min(member_losses(sweep_dir).values()) == pytest.approx(
        float(best.split("best_value:")[1].split()[0])
    )
    assert "leaderboard of 3 runs" in result.stdout
    study = optuna.load_study(study_name="optuna_mlp", storage=storage)  # the trials live in the database
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(member_losses(sweep_dir).values()))


@pytest.mark.parametrize("sweep", ["models", "mlp_grid", "lr_finder", "optuna_mlp", "best_search"])
def test_every_named_sweep_composes_and_passes_the_schema(sweep):
    from hydra import compose, initialize_config_dir

    from makemore.schema import validate

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    validate(cfg)


def test_the_slurm_launcher_composes_with_one_core_per_member():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
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
    assert run["config"]["model"]["emb"] in (4, 6)
    assert run["run"].run_group == sweep_dir.name  # sweep members are grouped by sweep
    assert list(member.glob("events.out.tfevents.*"))  # logger=all writes TensorBoard too


@pytest.mark.slow
def test_lr_finder_plots_loss_against_lr(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = multirun(sweep_dir, "sweep=lr_finder", "steps=200", "progress=false", script="sweep.py")
    assert (sweep_dir / "lr_finder.png").stat().st_size > 10_000
    assert "suggested lr" in result.stdout


def test_the_suggested_lr_is_where_the_smoothed_loss_bottoms_out():
    lrs = [10 ** (-3 + 3 * i / 99) for i in range(100)]
    losses = [(i - 70) ** 2 / 1000 + 2.0 + (0.3 if i % 7 == 0 else 0.0) for i in range(100)]  # minimum at i = 70
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[70], rel=0.15)
    falling = [(i - 70) ** 2 / 1000 + 2.0 for i in range(50)]
    assert suggest_lr(lrs[:50], falling) == lrs[49]  # still falling at the end: the last lr
