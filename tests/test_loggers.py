"""The logger backends beyond the README's single runs: MLflow from sweep members in two processes at once and a
resumed run logging into the MLflow run it started (read back through MLflow's own client); W&B online without
credentials, or without a server that answers."""

import contextlib
import os
import shlex
import socket
import subprocess
import sys
import threading
import time

import pytest

from makemore.rundir import find_runs

from helpers import FAST, ROOT, interrupted_once, read_metrics, run_script


def store(path):
    pytest.importorskip("mlflow", reason="the mlflow extra: pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    experiment = client.get_experiment_by_name("makemore").experiment_id
    return client, client.search_runs([experiment])


@pytest.mark.slow
def test_a_sweep_in_two_processes_logs_each_member_to_one_mlflow_store_beside_tensorboard(tmp_path):
    sweep_dir, database = tmp_path / "sweep", tmp_path / "store.db"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.emb=4,6", "logger=[tensorboard,mlflow]"]
    result = run_script(
        str(ROOT / "train.py"),
        *args,
        f"logger.mlflow.tracking_uri=sqlite:///{database}",
        *FAST,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    members = {run.name: run for run in find_runs(sweep_dir)}
    client, runs = store(database)
    assert sorted(run.info.run_name for run in runs) == sorted(members) and len(runs) == 2
    for run in runs:
        member = members[run.info.run_name]
        assert run.info.status == "FINISHED" and run.data.tags["makemore.sweep"] == sweep_dir.name
        assert run.data.metrics["loss/test"] == pytest.approx(read_metrics(member)["test_loss"])
        assert run.data.params["model.emb"] == member.name.removeprefix("emb=")
        assert list(member.glob("events.out.tfevents.*"))  # and TensorBoard beside it


@pytest.mark.slow
def test_a_resumed_run_goes_on_in_the_mlflow_run_it_started(tmp_path):
    run_dir, database = tmp_path / "run", tmp_path / "store.db"
    args = [
        str(ROOT / "train.py"),
        "steps=3000",
        "checkpoint_interval=100",
        "log_interval=100",
        "progress=false",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri=sqlite:///{database}",
        f"hydra.run.dir={run_dir}",
    ]
    interrupted_once(args, tmp_path, (run_dir / "checkpoint.pt").is_file, program=[sys.executable])
    client, [stopped] = store(database)
    assert stopped.info.status == "KILLED"  # stopped with a checkpoint: resume= continues it
    resumed = run_script(str(ROOT / "train.py"), f"resume={run_dir}")  # its saved logger section: the same store
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, [run] = store(database)
    assert run.info.run_id == stopped.info.run_id and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss/train")]
    assert steps[-1] == 3000 and read_metrics(run_dir)["status"] == "ok"


def train_online(tmp_path, *args, **env):
    """`python train.py logger=wandb logger.wandb.mode=online ...` as a user on a machine without W&B's server:
    a HOME and a .netrc of its own, WANDB_MODE unset."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    environment.update(HOME=str(tmp_path), NETRC=str(tmp_path / ".netrc"), **env)
    command = [sys.executable, str(ROOT / "train.py"), *args, "logger=wandb", "logger.wandb.mode=online", *FAST]
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)


def test_wandb_online_without_credentials_is_refused_before_anything_is_written(tmp_path):
    result = train_online(tmp_path, "hydra.run.dir=outputs/run")
    assert result.returncode == 1 and not (tmp_path / "outputs").exists()
    assert result.stderr.splitlines() == [
        "error: logger.wandb.mode=online needs W&B credentials for https://api.wandb.ai: run `wandb login`, set "
        "WANDB_API_KEY, or log offline (logger.wandb.mode=offline, the default) and `wandb sync` later"
    ]


@contextlib.contextmanager
def silent_server():
    """A W&B address that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def refusing_address():
    """A W&B address where nothing listens: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.slow
@pytest.mark.parametrize("server", ["refuses", "never answers"])
def test_an_unreachable_wandb_server_sends_a_sweep_offline_with_one_warning_and_a_sync_command(tmp_path, server):
    key = {"WANDB_API_KEY": "k" * 40}
    with contextlib.ExitStack() as stack:
        address = refusing_address() if server == "refuses" else stack.enter_context(silent_server())
        start = time.monotonic()
        args = ["-m", "seed=1,2", "logger.wandb.init_timeout=5", "hydra.sweep.dir=sweep"]
        result = train_online(tmp_path, *args, WANDB_BASE_URL=address, **key)
        seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning: W&B")]
    assert warning.startswith(f"warning: W&B at {address} is out of reach (") and "init_timeout=5)" in warning
    program, verb, path = shlex.split(warning.rpartition("upload one later with ")[2])  # as bash reads it pasted
    assert (program, verb) == ("wandb", "sync") and list((tmp_path / path).glob("run-*.wandb"))
    members = find_runs(tmp_path / "sweep")
    assert len(members) == 2 and all(read_metrics(m)["status"] == "ok" for m in members)
    assert all(list(m.glob("wandb/offline-run-*/run-*.wandb")) for m in members)  # both logged, offline
    assert seconds < 5 * 2 + 60  # the second member did not wait for the server again
