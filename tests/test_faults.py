"""Faults a long sweep meets, injected into real runs and sweeps (real processes, signals, a full tmpfs, a real
PostgreSQL): no worker outlives its sweep, a lost worker is retried exactly, one writer per run, every failure one
line with a true exit code, and no password in any record. docs/testing.md has the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from makemore.checkpoint import load_checkpoint
from makemore.shell import hydra_value

from helpers import ROOT, made_once, read_metrics, run_script

# A population of 4 trained in 2 worker processes, a checkpoint every 200 steps: long enough to be hit mid-training,
# short enough for the suite.
POPULATION = [
    "-m",
    "hydra/launcher=population",
    "hydra.launcher.workers=2",
    "seeds=4",
    "steps=3000",
    "checkpoint_interval=200",
    "progress=false",
    "logger=none",
]
MEMBERS = ("s42", "s43", "s44", "s45")
SOLO = ["steps=6000", "checkpoint_interval=200", "progress=false", "logger=none"]
LOSSES = ("train_loss", "dev_loss", "test_loss")


def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(holds, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not holds():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def losses(run_dir: Path) -> list[float]:
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "ok", metrics
    return [metrics[key] for key in LOSSES]


def population_reference(tmp_path_factory) -> Path:
    """The population's uninterrupted sweep, run once for the session."""

    def make(directory: Path) -> None:
        result = run_script(str(ROOT / "train.py"), *POPULATION, f"hydra.sweep.dir={directory / 'sweep'}")
        assert result.returncode == 0, result.stderr[-2000:]

    return made_once(tmp_path_factory, "population_reference", make) / "sweep"


def solo_reference(tmp_path_factory) -> Path:
    """The solo run's uninterrupted run, run once for the session."""

    def make(directory: Path) -> None:
        result = run_script(str(ROOT / "train.py"), *SOLO, f"hydra.run.dir={directory / 'run'}")
        assert result.returncode == 0, result.stderr[-2000:]

    return made_once(tmp_path_factory, "solo_reference", make) / "run"


def workers_of(process: subprocess.Popen) -> list[psutil.Process]:
    """The sweep's worker processes, once they have started: forked from it (its own command line) or loky's."""
    sweep = psutil.Process(process.pid)
    return [c for c in sweep.children() if c.cmdline() == sweep.cmdline() or "LokyProcess" in " ".join(c.cmdline())]


FORKED = """
import atexit, os, signal, sys
from pathlib import Path
from makemore.workers import ForkedWorker, fork_is_safe, how_it_died

answer = Path(sys.argv[1])
print(fork_is_safe())
atexit.register(lambda: answer.with_name("sweep's exit call ran").touch())  # the sweep's, never its workers'
print(ForkedWorker(answer, pow, 2, 10).result(), sorted(path.name for path in answer.parent.iterdir()))
try:
    ForkedWorker(answer, int, "ten").result()
except ValueError as error:
    print("raised:", error)
for end in (lambda: os.kill(os.getpid(), signal.SIGKILL), lambda: os._exit(3)):
    try:
        ForkedWorker(answer, end).result()
    except Exception as error:
        print("lost:", type(error).__name__, how_it_died(error))
"""


def test_a_forked_worker_returns_raises_or_is_lost_as_an_executors_and_runs_none_of_the_sweeps_exit_calls(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FORKED, str(tmp_path / "answer.pickle")],
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},  # as the commands set it: no thread but the main one
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "True",
        "1024 []",  # the answer read is removed
        "raised: invalid literal for int() with base 10: 'ten'",
        "lost: WorkerLost SIGKILL",
        "lost: WorkerLost exit code 3",
    ]
    assert (tmp_path / "sweep's exit call ran").is_file()


@pytest.mark.slow
def test_a_killed_sweep_leaves_no_process_and_its_second_copy_is_refused_then_it_continues_exactly(
    tmp_path, tmp_path_factory
):
    reference = population_reference(tmp_path_factory)
    sweep_dir = tmp_path / "sweep"
    args = [*POPULATION, f"hydra.sweep.dir={sweep_dir}"]
    process = start(args, tmp_path)
    wait_until(lambda: any(sweep_dir.glob("s4*/checkpoint.pt")), process)
    second = run_script(str(ROOT / "train.py"), *args, cwd=tmp_path)  # the same sweep's continue, at once
    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"error: {sweep_dir} is being written by process {process.pid} on {os.uname().nodename}: one process "
        f"writes a run at a time; wait for it to end, or stop it (kill {process.pid}) and run this command again "
        "(its checkpoint is whole)"
    )
    family = psutil.Process(process.pid).children(recursive=True)
    assert len(workers_of(process)) == 2
    process.kill()
    process.communicate()
    gone, alive = psutil.wait_procs(family, timeout=3)  # every worker, gone within 3 s
    assert alive == [] and len(gone) == len(family) >= 2

    result = run_script(str(ROOT / "train.py"), *args, cwd=tmp_path)  # what a user types again: the same command
    assert result.returncode == 0, result.stderr[-2000:]
    for member in MEMBERS:
        assert losses(sweep_dir / member) == losses(reference / member)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("max_failures", "blas_threads", "kind"),
    [(1, "1", "forked"), (0, "2", "LokyProcess")],  # numpy's BLAS threads make a fork unsafe: loky's workers instead
)
def test_a_lost_worker_is_restarted_from_its_checkpoints_or_its_members_interrupted(
    tmp_path, tmp_path_factory, max_failures, blas_threads, kind
):
    reference = population_reference(tmp_path_factory)
    sweep_dir = tmp_path / "sweep"
    args = [*POPULATION, f"hydra.sweep.dir={sweep_dir}", f"hydra.launcher.max_failures={max_failures}"]
    process = start(args, tmp_path, env={"OPENBLAS_NUM_THREADS": blas_threads})
    wait_until(lambda: any(sweep_dir.glob("s4*/checkpoint.pt")) and len(workers_of(process)) == 2, process)
    lost = workers_of(process)[0]
    forked = lost.cmdline() == psutil.Process(process.pid).cmdline()
    assert ("forked" if forked else "LokyProcess") == kind
    lost.kill()
    stdout, stderr = process.communicate(timeout=300)
    assert "Traceback" not in stdout + stderr
    told = [line for line in stdout.splitlines() if line.startswith(f"worker {lost.pid} was lost (SIGKILL)")]
    assert len(told) == 1, stdout[-2000:]
    if max_failures:
        assert process.returncode == 0, stderr[-2000:]
        assert told[0].endswith("restart from their checkpoints (restart 1 of 1)")
    else:
        assert process.returncode == 1
        interrupted = [m for m in MEMBERS if read_metrics(sweep_dir / m)["status"] == "interrupted"]
        assert len(interrupted) == 2 and (sweep_dir / "leaderboard.md").is_file()
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: 2 of 4 members of the sweep did not finish (2 interrupted)")
        assert "continue it with: python train.py -m " in last and last.endswith(f"hydra.sweep.dir={sweep_dir}")
    for member in MEMBERS:  # the continue command's exact losses: the killed sweep's test
        if max_failures or member not in interrupted:
            assert losses(sweep_dir / member) == losses(reference / member)


@pytest.mark.slow
def test_a_second_resume_of_a_run_is_refused_and_a_killed_ones_lock_is_taken_over(tmp_path, tmp_path_factory):
    reference = solo_reference(tmp_path_factory)
    run_dir = tmp_path / "run"
    first = start([*SOLO, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_until(lambda: (run_dir / "checkpoint.pt").exists(), first)
    first.kill()
    first.communicate()
    resume = f"resume={hydra_value(str(run_dir))}"
    resuming = start([resume], tmp_path)
    holder = run_dir / ".lock"  # the killed run's is still there, unlocked: wait for the resume's own
    wait_until(lambda: holder.exists() and holder.read_text().split()[:1] == [str(resuming.pid)], resuming)
    second = run_script(str(ROOT / "train.py"), resume, cwd=tmp_path)
    assert second.returncode == 1
    assert second.stderr.strip().startswith(f"error: {run_dir} is being written by process {resuming.pid} on ")
    resuming.kill()
    resuming.communicate()
    third = run_script(str(ROOT / "train.py"), resume, cwd=tmp_path)  # no clean-up by hand: the lock is taken over
    assert third.returncode == 0, third.stderr[-2000:]
    assert losses(run_dir) == losses(reference)
    assert not (run_dir / ".lock").exists()  # a finished run's record keeps no lock file


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, where this machine lets the tests mount one (as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"no tmpfs can be mounted here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_a_run_in_one_line_with_its_checkpoint_whole_and_resume_exact(
    tmp_path, tmp_path_factory, small_disk
):
    reference = solo_reference(tmp_path_factory)
    run_dir = small_disk / "run"
    process = start([*SOLO, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_until(lambda: (run_dir / "checkpoint.pt").exists(), process)
    filler = small_disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # every byte the disk has left
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    os.close(descriptor)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert stderr.strip() == (
        f"error: cannot write {run_dir}/checkpoint.pt: no space left on device; make room on its disk (or make it "
        f"writable), then continue with python train.py resume={run_dir}"
    )
    assert load_checkpoint(run_dir / "checkpoint.pt", {"state"})["state"]["step"] > 0  # whole
    filler.unlink()
    result = run_script(str(ROOT / "train.py"), f"resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert losses(run_dir) == losses(reference)


@pytest.mark.slow
def test_a_sweep_with_a_failed_member_exits_1_and_its_last_line_counts_it(tmp_path):
    result = run_script(str(ROOT / "train.py"), "-m", "model.emb=10,abc", "steps=30", "progress=false", cwd=tmp_path)
    assert result.returncode == 1
    [sweep_dir] = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: 1 of 2 members of the sweep did not finish (1 failed); the reasons are in "
        f"{sweep_dir.relative_to(tmp_path)}/leaderboard.md"
    )


@pytest.mark.slow
def test_no_password_of_a_storage_or_tracking_url_is_written_or_printed(tmp_path):
    pgserver = pytest.importorskip("pgserver", reason="pgserver (the dev extra) starts the PostgreSQL server")
    import tempfile

    try:  # its socket lives in its data directory, whose path must stay short
        server = pgserver.get_server(tempfile.mkdtemp(prefix="pg"), cleanup_mode="stop")
    except Exception as e:
        pytest.skip(f"no PostgreSQL server can be started here: {e}")
    server.psql("CREATE DATABASE tracking;")
    password = "Sw0rdf1sh-in-the-url"
    socket_dir = server.get_uri().split("host=")[1]
    url = f"postgresql://postgres:{password}@/%s?host={socket_dir}"
    result = run_script(
        str(ROOT / "sweep.py"),
        "sweep=optuna_mlp",
        f"hydra.sweeper.storage={hydra_value(url % 'postgres')}",
        "logger=[tensorboard,mlflow]",  # event files (their HParams, texts) and MLflow's params
        f"logger.mlflow.tracking_uri={hydra_value(url % 'tracking')}",
        "hydra.sweeper.n_trials=2",
        "steps=30",
        "progress=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert password not in result.stdout + result.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 20 and [p for p in written if password.encode() in p.read_bytes()] == []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(url % "tracking").replace(f":{password}", ""))
    runs = client.search_runs([client.get_experiment_by_name("makemore").experiment_id])
    assert len(runs) == 2
    assert all(password not in json.dumps([r.data.params, r.data.tags]) for r in runs)
    assert "postgresql://postgres@/postgres" in result.stdout  # the dashboard command, its password in PGPASSWORD


def closed_port() -> int:
    """A port nobody listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_tracking_server_that_does_not_answer_is_refused_before_a_byte(tmp_path):
    port = closed_port()
    started = time.monotonic()
    result = run_script(
        str(ROOT / "train.py"), "logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}", cwd=tmp_path
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 1 and result.stderr.startswith(
        f"error: the MLflow tracking server http://127.0.0.1:{port} does not answer ("
    )
    assert len(result.stderr.strip().splitlines()) == 1 and "drop logger.mlflow.tracking_uri" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no run directory, no store


@pytest.mark.slow
def test_a_storage_that_does_not_answer_is_refused_before_a_byte(tmp_path):
    port = closed_port()
    started = time.monotonic()
    result = run_script(
        str(ROOT / "sweep.py"),
        "sweep=optuna_mlp",
        f"hydra.sweeper.storage=postgresql://user:Sw0rdf1sh@127.0.0.1:{port}/optuna",
        cwd=tmp_path,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 1 and "Sw0rdf1sh" not in result.stdout + result.stderr
    assert result.stderr.startswith(
        f"error: the study's storage postgresql://user@127.0.0.1:{port}/optuna does not answer ("
    )
    assert len(result.stderr.strip().splitlines()) == 1 and "start its database server" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_passwords_are_moved_to_their_backends_variables_hidden_when_shown_and_refused_in_a_config_file(monkeypatch):
    from makemore.errors import MakemoreError
    from makemore.redact import passwords_moved_out, redact, refuse_written_passwords, shell_url

    for variable in ("PGPASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)
    assert passwords_moved_out(
        [
            "model.emb=10",
            "'hydra.sweeper.storage=\"postgresql+psycopg://me:s3cret@db:5432/optuna?sslmode=require\"'",
            "logger.mlflow.tracking_uri=https://me:t0ken@mlflow.example.org/",
            "hydra.sweeper.storage=postgresql://me:${oc.env:DB_PASSWORD}@db/optuna",
        ]
    ) == [
        "model.emb=10",
        "'hydra.sweeper.storage=\"postgresql+psycopg://me@db:5432/optuna?sslmode=require\"'",
        "logger.mlflow.tracking_uri=https://mlflow.example.org/",
        "hydra.sweeper.storage=postgresql://me:${oc.env:DB_PASSWORD}@db/optuna",
    ]
    assert os.environ["PGPASSWORD"] == "s3cret"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "me" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "t0ken"
    assert (
        redact("mysql://u:pw@h/db?token=abc&x=1 and http://h:80/p")
        == "mysql://u:***@h/db?token=***&x=1 and http://h:80/p"
    )
    assert shell_url("postgresql://u:${oc.env:DB_PASSWORD}@h/db") == '"postgresql://u:${DB_PASSWORD}@h/db"'
    assert shell_url("postgresql://u:pw@h/db") == "'postgresql://u:***@h/db'"
    with pytest.raises(MakemoreError, match=r"^x\.url holds a password"):
        passwords_moved_out(["x.url=mysql://u:pw@h/db"])
    with pytest.raises(MakemoreError, match=r"^logger\.mlflow\.tracking_uri holds a password"):
        refuse_written_passwords([("logger.mlflow.tracking_uri", "http://u:${oc.env:X}@h")])  # saved resolved
    refuse_written_passwords([("hydra.sweeper.storage", "postgresql://u:${oc.env:X}@h/db")])  # saved as written


def test_a_directory_is_busy_while_another_process_holds_it_and_free_once_that_one_is_killed(tmp_path):
    from makemore import lock

    code = "import sys, time; from pathlib import Path; from makemore import lock; lock.hold(Path(sys.argv[1]))"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"{code}; print(flush=True); time.sleep(60)", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    holder.stdout.readline()
    assert lock.busy(tmp_path)
    with pytest.raises(lock.Busy, match=rf"^{tmp_path} is being written by process {holder.pid} on "):
        lock.hold(tmp_path)
    holder.kill()
    holder.wait()
    assert not lock.busy(tmp_path)  # the kernel let go of the dead holder's lock; its file is still there
    lock.hold(tmp_path)
    assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid()) and not lock.busy(tmp_path)
    lock.release(tmp_path)
    assert not (tmp_path / ".lock").exists()
