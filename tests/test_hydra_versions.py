"""Hydra 1.3 and 1.4 (and OmegaConf 2.3 and 2.4) both run with no warning; the sweeper's settings have a schema.
.ci/run runs these, the quick suite and the other `hydra_versions` tests under each version."""

from __future__ import annotations

import warnings

import hydra
import pytest

from makemore.cli import sweep_is_multirun
from makemore.hydra_versions import VERSION_BASE

from helpers import compose_config, run_bash

QUICK = "steps=20 eval_interval=10 log_interval=10 progress=false logger=none samples=2"


def test_the_version_base_is_passed_only_to_the_hydra_that_wants_it():
    assert VERSION_BASE == ({} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"})


def test_composing_a_config_warns_of_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compose_config("model=mlp", "target=2", "schedule=step", "schedule.gamma=1")


@pytest.mark.parametrize(
    "args, multirun",
    [
        (["sweep=models"], ["-m", "sweep=models"]),
        (["-m", "sweep=models"], ["-m", "sweep=models"]),
        (["sweep=null", "steps=5"], ["sweep=null", "steps=5"]),
        (["steps=5"], ["steps=5"]),
        (["sweep=models", "--cfg", "hydra"], ["sweep=models", "--cfg", "hydra"]),
        (["sweep=models", "--help"], ["sweep=models", "--help"]),
    ],
)
def test_a_named_sweep_on_train_py_is_a_multirun(args, multirun):
    assert sweep_is_multirun(args) == multirun


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Warning" in line or "warn(" in line]


@pytest.mark.slow
@pytest.mark.hydra_versions
def test_the_default_run_and_an_optuna_search_print_no_warning(project):
    fast = run_bash("python train.py debug=fast", project)
    assert fast.returncode == 0 and warnings_in(fast.stderr) == [], fast.stderr[-2000:]
    search = run_bash(f"python sweep.py sweep=optuna_mlp hydra.sweeper.n_trials=2 {QUICK}", project)
    assert search.returncode == 0 and warnings_in(search.stderr) == [], search.stderr[-2000:]
    assert "leaderboard of 2 runs" in search.stdout
    named = run_bash(f"python train.py sweep=lr_finder {QUICK}", project)
    assert named.returncode == 0 and warnings_in(named.stderr) == [], named.stderr[-2000:]
    assert "leaderboard of 1 runs" in named.stdout


@pytest.mark.slow
@pytest.mark.hydra_versions
@pytest.mark.parametrize(
    "setting, told",
    [
        (
            "n_trials=abc",
            "Value 'abc' of type 'str' could not be converted to Integer; full_key: hydra.sweeper.n_trials",
        ),
        ("direction=sideways", "Invalid value 'sideways', expected one of [minimize, maximize]"),
        ("n_trials=0", "hydra.sweeper.n_trials=0 is not allowed: it must be at least 1"),
        ("n_jobs=-1", "hydra.sweeper.n_jobs=-1 is not allowed: it must be at least 1"),
    ],
)
def test_a_bad_sweeper_setting_is_one_line_before_anything_is_written(project, setting, told):
    result = run_bash(f"python sweep.py sweep=optuna_mlp hydra.sweeper.{setting}", project)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert told in result.stderr
    assert not (project / "outputs").exists()
