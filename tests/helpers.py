"""Shared test helpers: Hydra's compose API over conf/, and real `python train.py` subprocesses as a user runs them."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from makemore.config import compose_train_config
from makemore.rundir import read_metrics as read_run_metrics
from makemore.shell import hydra_value

ROOT = Path(__file__).resolve().parents[1]
FAST = ["steps=40", "eval_interval=20", "log_interval=10", "progress=false", "samples=5"]

compose_config = compose_train_config


def group_options(group: str) -> list[str]:
    """The options of a config group as Hydra finds them (conf/ YAML files and ConfigStore nodes), sorted."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from makemore.config import CONF_DIR
    from makemore.hydra_versions import VERSION_BASE

    with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def run_script(script: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300):
    """Run a top-level script as a user would, with stdout and stderr captured."""
    environment = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, script, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def run_train(run_dir: Path, *args: str, **kwargs):
    """`python train.py` into a given run directory (any path: it is quoted for Hydra)."""
    return run_script(str(ROOT / "train.py"), f"hydra.run.dir={hydra_value(str(run_dir))}", *args, **kwargs)


def interrupted_once(
    args: list[str], cwd: Path, ready: Callable[[], bool], env: dict | None = None, program: list[str] | None = None
) -> str:
    """Start `python <args>` (or `<program> <args>`) and press Ctrl-C once `ready()` holds (its first checkpoint is
    written, say); the stderr of the process, which must exit with 130 as an interrupted run does."""
    process = subprocess.Popen(
        [*(program or [sys.executable]), *args],
        cwd=cwd,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-500:]
    return stderr


def run_bash(command: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """A command exactly as the project printed it, pasted into bash, with this Python first on the PATH."""
    environment = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def tree_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under directory, by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def read_metrics(run_dir: Path) -> dict:
    """A run's metrics.json, which must exist."""
    metrics = read_run_metrics(run_dir)
    assert metrics is not None, f"no metrics.json in {run_dir}"
    return metrics


def write_tiny_corpus(directory: Path) -> Path:
    """A few dozen short names in directory/tiny.txt: enough for a three-way split, fast to train on."""
    names = ["ab", "abc", "ba", "bca", "cab", "cc", "a", "bb", "acb", "cba"] * 6
    path = directory / "tiny.txt"
    path.write_text("\n".join(names), encoding="utf-8")
    return path


def made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """A directory that make(directory) fills once for the whole test session, whichever xdist worker asks first;
    the others wait for it and share it (pytest-xdist's loadgroup no longer keeps a module on one worker)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # under xdist, every worker's base temp lies in this session's one
        shared = shared.parent
    directory, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            make(directory)
            done.touch()
    return directory


def served_trials(command: str, cwd) -> list[dict]:
    """The trials optuna-dashboard serves over its HTTP API, started by the printed command (on a free port)."""
    import json
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bin_dir = os.path.dirname(sys.executable)  # the venv's, as an activated venv puts it first on PATH
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command} --host 127.0.0.1 --port {port}"], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"{command} served nothing on port {port}")
        (study,) = studies
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0") as response:
            return json.load(response)["trials"]
    finally:
        server.terminate()
        server.wait(timeout=10)
