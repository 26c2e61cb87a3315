"""Shared test helpers: Hydra's compose API over conf/, and real `python train.py` subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tqdm import tqdm

from makemore.cli import hydra_value
from makemore.config import compose_train_config
from makemore.data import read_items, resolve_path

ROOT = Path(__file__).resolve().parents[1]
# Every subprocess runs the makemore next to these tests (mutmut's mutated copy included), not an installed one.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
# mutmut forks a process per mutant. tqdm's default lock is a multiprocessing one, shared by every fork, and its
# monitor thread takes it every 10 s: a fork that ends or is killed while holding it hangs every later fork.
tqdm.set_lock(threading.RLock())
tqdm.monitor_interval = 0
FAST = ["steps=40", "eval_interval=20", "log_interval=10", "progress=false", "samples=5"]


compose_config = compose_train_config



def pytest_collection_modifyitems(config, items):
    """Under mutmut, the fastest tests first: with its -x, a mutant then dies at its cheapest failing test."""
    stats = ROOT / "mutmut-stats.json"  # ROOT is mutmut's copy of the project, mutants/
    if os.environ.get("MUTANT_UNDER_TEST") and stats.is_file():
        durations = json.loads(stats.read_text())["duration_by_test"]
        items.sort(key=lambda item: durations.get(item.nodeid, 0.0))

def run_script(script: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300):
    """Run a top-level script as a user would, with stdout and stderr captured."""
    environment = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, script, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def run_train(run_dir: Path, *args: str, **kwargs):
    """`python train.py` into a given run directory (any path: it is quoted for Hydra)."""
    return run_script(str(ROOT / "train.py"), f"hydra.run.dir={hydra_value(str(run_dir))}", *args, **kwargs)


def run_bash(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command exactly as the project printed it, pasted into bash, with this Python first on the PATH."""
    environment = {**os.environ, "WANDB_MODE": "offline",
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's entry points and conf/, to run in: its outputs/ starts empty and stays apart."""
    path = tmp_path / "project"
    path.mkdir()
    for script in ("train.py", "sweep.py"):
        shutil.copy(ROOT / script, path)
    shutil.copytree(ROOT / "conf", path / "conf")
    return path


def tree_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under directory, by relative path."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def few_names(tmp_path_factory) -> str:
    """The override for the first 2,000 built-in names: real names for in-process runs that test the loop, not the
    lectures' losses, evaluated in a tenth of the time the whole split takes."""
    path = tmp_path_factory.mktemp("data") / "few_names.txt"
    path.write_text("\n".join(read_items(resolve_path(None))[:2000]), encoding="utf-8")
    return f"data.path={path}"


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A few dozen short names: enough for a three-way split, fast to train on."""
    names = ["ab", "abc", "ba", "bca", "cab", "cc", "a", "bb", "acb", "cba"] * 6
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(names), encoding="utf-8")
    return path
