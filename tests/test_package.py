"""The package installs anywhere: its wheel, installed into a fresh venv outside the checkout (nothing of the
checkout on sys.path), runs the default model, a sweep, an Optuna search, a rerun, a resume and sampling through
its console scripts, with its config tree, data, licences and sweeper plugin inside it."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from makemore.rundir import find_runs

from helpers import ROOT, interrupted_once, read_metrics

QUICK = "steps=30 eval_interval=10 log_interval=10 progress=false samples=3"


def check(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (command, result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    check([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)], dist)
    [built] = dist.glob("makemore-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_the_config_data_licences_and_entry_points(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    shipped_conf = {n.removeprefix("makemore/conf/") for n in names if n.startswith("makemore/conf/")}
    conf = {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*") if p.suffix in (".py", ".yaml")}
    assert shipped_conf == conf
    assert {"makemore/data/names.txt", "makemore/data/names.txt.LICENSE"} <= names
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = [
        Requirement(line.removeprefix("Requires-Dist: "))
        for line in metadata.splitlines()
        if "extra ==" not in line and line.startswith("Requires-Dist: ")
    ]
    assert declared == list(map(Requirement, required))  # the fresh venv below borrows them, so they are read here
    assert "License-Expression: MIT" in metadata and "License-File: makemore/data/names.txt.LICENSE" in metadata
    for entry in ("makemore-train = makemore.entrypoints:train", "makemore-sweep = makemore.entrypoints:sweep"):
        assert entry in entry_points
    assert "makemore_optuna = hydra_plugins.makemore_optuna.optuna_sweeper:OptunaSweeper" in entry_points


def test_every_package_the_code_imports_is_declared():
    """Each third-party module imported by makemore/ and the sweeper plugin comes from a declared requirement."""
    from importlib.metadata import packages_distributions

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = set()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for requirement in [*project["dependencies"], *extras["wandb"], *extras["mlflow"]]:
        declared.add(re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower())
    imported = set()
    for path in [*(ROOT / "makemore").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"makemore", "hydra_plugins"}
    distributions = packages_distributions()
    undeclared = {m for m in third_party if not {d.lower() for d in distributions[m]} & declared}
    assert undeclared == set() and "yaml" in third_party


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_runs_every_command_from_anywhere(wheel, tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the checkout on sys.path
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", WANDB_MODE="offline")
    check([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    # The dependencies are this environment's (installing them again costs a minute; the wheel's list of them is
    # checked above), behind the new venv's own site-packages, which gets the wheel alone.
    [site_packages] = venv.glob("lib/python*/site-packages")
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "dependencies.pth").write_text("\n".join(outer) + "\n")
    check([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], tmp_path, env)
    user = tmp_path / "elsewhere"
    user.mkdir()

    def bash(command: str) -> subprocess.CompletedProcess:
        return check(["bash", "-c", command], user, env)

    imported = "import makemore, hydra_plugins.makemore_optuna as p, hydra_plugins.makemore_population as q"
    where = bash(f"python -c '{imported}; print(makemore.__file__, p.__file__, q.__file__)'")
    assert where.stdout.count(str(venv)) == 3 and str(ROOT) not in where.stdout

    # The README's four commands as written (a cheap suffix at most), each the one run of its entry point here.
    train, sweep, sample, evaluate = readme_commands()
    bash(f"{train} {QUICK}")
    [single] = find_runs(user / "outputs")
    assert read_metrics(single)["status"] == "ok"
    search = bash(f"{sweep} hydra.sweeper.n_trials=2 {QUICK}")
    assert "leaderboard of 2 runs" in search.stdout
    samples = bash(sample.replace("outputs/<run>", str(single.relative_to(user))))
    assert len(samples.stdout.splitlines()) == 3 and "samples:" in samples.stderr
    scored = bash(evaluate.replace("outputs/<run>", str(single.relative_to(user))))
    assert f"{read_metrics(single)['test_loss']:.4f} nats/char" in scored.stdout

    bash(f"python -m makemore seed=7 {QUICK}")
    sweep = bash(f"makemore-train -m hydra/launcher=population optim.lr=0.01,0.02 {QUICK}")  # the packaged launcher
    assert "leaderboard of 2 runs" in sweep.stdout and "makemore-train 'rerun=" in sweep.stdout
    assert "population 1 of 1: 2 members stacked" in sweep.stdout

    rerun = bash(f"makemore-train rerun={single.relative_to(user)}")
    assert f"rerun verdict: reproduced: losses identical to {single.relative_to(user)}" in rerun.stdout

    args = ["steps=3000", "checkpoint_interval=100", "progress=false", "logger=none"]
    stopped = interrupted_once(
        args,
        user,
        lambda: bool(list((user / "outputs").glob("*/*/checkpoint.pt"))),
        env=env,
        program=[str(venv / "bin" / "makemore-train")],
    )
    [resumed] = [run for run in find_runs(user / "outputs") if (run / "checkpoint.pt").exists()]
    bash(stopped.split("continue with ", 1)[1].splitlines()[0])  # the printed command, pasted: makemore-train resume=
    assert read_metrics(resumed)["status"] == "ok" and read_metrics(resumed)["steps"] == 3000


def readme_commands() -> list[str]:
    """The README's `makemore-...` commands (its code blocks are indented four spaces), comments cut off."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.split("  #")[0].strip() for line in lines if line.startswith("    makemore-")]


def test_the_readme_shows_the_four_commands():
    assert [command.split()[0] for command in readme_commands()] == [
        "makemore-train",
        "makemore-sweep",
        "makemore-sample",
        "makemore-eval",
    ]
