"""The logger backends beyond the README's single runs: MLflow from sweep members in two processes at once and a
resumed run logging into the MLflow run it started (read back through MLflow's own client), a real `mlflow ui` and
`mlflow server` read back through their REST API, one of them killed in the middle of a run; W&B online without
credentials, or without a server that answers."""

import contextlib
import csv
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


@contextlib.contextmanager
def mlflow_server(tmp_path, *store: str):
    """A real `mlflow server` (what the mlflow extra installs) on a free port, its own SQLite store and artifacts in
    tmp_path (or `mlflow ui` with `store`'s options): its URL once it answers, and its process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mlflow = str(os.path.join(os.path.dirname(sys.executable), "mlflow"))
    command = [mlflow, "ui" if store else "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += list(store) or ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    command += [] if store else ["--artifacts-destination", (tmp_path / "artifacts").as_uri()]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while rest(url, "GET", "/health") is None:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        yield url, server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 9)
        server.wait()


def rest(url: str, method: str, path: str, body: dict | None = None):
    """An MLflow server's REST API answer (JSON, or the text of /health), or None where it does not answer."""
    import json
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return text if path == "/health" else json.loads(text)


def runs_on(url: str) -> list[dict]:
    """The makemore experiment's runs, as the server's REST API lists them."""
    experiment = rest(url, "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=makemore")
    if not experiment:
        return []
    found = rest(
        url, "POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment"]["experiment_id"]]}
    )
    return (found or {}).get("runs", [])


def history_on(url: str, run_id: str, key: str) -> dict[int, float]:
    found = rest(url, "GET", f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}&max_results=1000")
    return {int(m["step"]): m["value"] for m in (found or {}).get("metrics", [])}


@pytest.mark.slow
def test_mlflow_ui_on_the_default_store_shows_its_runs_and_takes_one_over_http_read_back_over_rest(tmp_path):
    pytest.importorskip("flask", reason="the mlflow extra: pip install -e '.[mlflow]'")
    local = run_script(str(ROOT / "train.py"), "logger=mlflow", "steps=20", "progress=false", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    with mlflow_server(tmp_path, "--backend-store-uri", "sqlite:///outputs/mlflow.db") as (url, _):  # as documented
        [run] = runs_on(url)
        assert {p["key"]: p["value"] for p in run["data"]["params"]}["steps"] == "20"
        args = ["logger=mlflow", f"logger.mlflow.tracking_uri={url}", "steps=60", "eval_interval=20", "model.emb=6"]
        result = run_script(str(ROOT / "train.py"), *args, "progress=false", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        [run] = [r for r in runs_on(url) if r["info"]["run_id"] != run["info"]["run_id"]]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["model.emb"] == "6" and params["steps"] == "60"
        [run_dir] = [d for d in find_runs(tmp_path / "outputs") if "emb" in d.name]
        with open(run_dir / "history.csv", newline="") as f:
            rows = [row for row in csv.DictReader(f) if row["loss/dev"]]
        assert history_on(url, run["info"]["run_id"], "loss/dev") == {
            int(r["step"]): float(r["loss/dev"]) for r in rows
        }
        assert run["info"]["status"] == "FINISHED"


@pytest.mark.slow
def test_a_run_whose_mlflow_server_dies_trains_on_with_one_warning_and_its_record_whole(tmp_path):
    pytest.importorskip("flask", reason="the mlflow extra: pip install -e '.[mlflow]'")
    with mlflow_server(tmp_path) as (url, server):
        args = ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={url}", "steps=4000", "progress=false"]
        run = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not any(history_on(url, r["info"]["run_id"], "loss/dev") for r in runs_on(url)):
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(server.pid, 9)
        killed = time.monotonic()
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr.decode()[-2000:]
    assert time.monotonic() - killed < 30  # MLflow's own retries would take minutes
    warnings = [line for line in stderr.decode().splitlines() if line.startswith("warning: the MLflow")]
    assert len(warnings) == 1 and f"the MLflow tracking server {url} stopped answering" in warnings[0]
    [run_dir] = find_runs(tmp_path / "outputs")
    assert read_metrics(run_dir)["status"] == "ok" and read_metrics(run_dir)["steps"] == 4000
    with open(run_dir / "history.csv", newline="") as f:
        assert int(list(csv.DictReader(f))[-1]["step"]) == 4000
    assert list(run_dir.glob("events.out.tfevents.*"))
