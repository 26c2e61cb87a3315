"""MLflow (`logger=mlflow`; pip install -e '.[mlflow]'): each run an MLflow run with its hyperparameters as
params, its losses per step as metrics, its texts and figures, and at its end its record files as artifacts.

By default the runs go to an SQLite store beside them, `sqlite:///outputs/mlflow.db` for runs under outputs/
(`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` shows them); logger.mlflow.tracking_uri (or
MLFLOW_TRACKING_URI) names a server or another store.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from makemore.errors import MakemoreError
from makemore.loggers import RunInfo, why_unreachable
from makemore.redact import redact
from makemore.rundir import (
    CHECKPOINT,
    CONFIG,
    HISTORY,
    METRICS,
    MLFLOW_ARTIFACTS,
    MODEL,
    PROVENANCE,
    SAMPLES,
    dashboard_root,
)

STORE = "mlflow.db"  # the default store's file, at the top of the runs' directory tree (beside TensorBoard's view)
RUN_TAG = "makemore.run_id"  # the run's own id, kept across resume=: a resumed run finds its MLflow run by it
RECORD_FILES = (CONFIG, PROVENANCE, METRICS, HISTORY, SAMPLES, MODEL)  # uploaded as artifacts when the run ends
BATCH = 100  # params per log_batch call: MLflow's limit
ANSWER_SECONDS = 10  # how long a tracking server has to answer before a run is refused
# A server's calls, unless the user set their own: MLflow retries a failed call 7 times with growing back-off
# (minutes); a run pays at most ~10 s for the one call that finds its server gone, then stops calling it
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
}


@dataclass
class MlflowSettings:
    """logger.mlflow: where the runs are tracked."""

    tracking_uri: Optional[str] = None  # null: MLFLOW_TRACKING_URI, else an SQLite store beside the runs
    experiment: str = "makemore"  # the MLflow experiment every run joins (created if missing)


class MlflowLogger:
    """An MLflow run through MlflowClient (no global active run: a population's members log side by side)."""

    Settings = MlflowSettings

    @staticmethod
    def preflight(settings: dict) -> None:
        """Refuse a tracking server that does not answer within ANSWER_SECONDS, before the run writes anything
        (MLflow's client would retry for minutes)."""
        uri = settings.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if not uri.startswith(("http://", "https://")):
            return
        reason = why_unreachable(f"{uri.rstrip('/')}/health", ANSWER_SECONDS)
        if reason:
            raise MakemoreError(
                f"the MLflow tracking server {redact(uri)} does not answer ({reason}); start it (mlflow server), or "
                "drop logger.mlflow.tracking_uri to log into the local store beside the runs"
            )

    def __init__(self, run: RunInfo, **settings):
        wanted = MlflowSettings(**settings)
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise MakemoreError("logger=mlflow needs the mlflow package; pip install -e '.[mlflow]'") from None
        self.run_dir = run.run_dir
        uri = wanted.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_store(run.run_dir)
        self.server = redact(uri) if uri.startswith(("http://", "https://")) else None
        self.lost: str | None = None  # why the server stopped answering, once it did
        if self.server:
            for name, value in CLIENT_DEFAULTS.items():
                os.environ.setdefault(name, value)
        with store_lock(uri):  # two processes of a sweep must not both create the store's tables
            self.client = MlflowClient(tracking_uri=uri)
            experiment = experiment_id(self.client, wanted.experiment, artifacts_beside(uri))
        earlier = self.client.search_runs([experiment], filter_string=f"tags.`{RUN_TAG}` = '{run.run_id}'")
        if earlier:  # resume=: the same MLflow run goes on
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {RUN_TAG: run.run_id, "makemore.run_dir": str(run.run_dir)}
        if run.sweep:
            tags["makemore.sweep"] = run.sweep
        self.run_id = self.client.create_run(experiment, run_name=run.name, tags=tags).info.run_id
        params = [Param(key, str(value)) for key, value in run.hparams.items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + BATCH])
        self.client.log_dict(self.run_id, run.provenance, "provenance.json")

    def send(self, call: str, *args, **kwargs) -> None:
        """One call of the client's; a tracking server that stops answering ends this run's logging to it, with
        one warning, and never its training (its record keeps everything MLflow would have had)."""
        if self.lost:
            return
        try:
            getattr(self.client, call)(self.run_id, *args, **kwargs)
        except Exception as error:
            if not self.server:
                raise
            self.lost = redact(str(error).splitlines()[0][:200])
            print(
                f"warning: the MLflow tracking server {self.server} stopped answering ({self.lost}); "
                f"{self.run_dir.name} trains on without it, its record whole: history.csv, metrics.json and "
                "TensorBoard hold what MLflow did not get",
                file=sys.stderr,
                flush=True,
            )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.send("log_batch", metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def text(self, tag: str, text: str, step: int) -> None:
        self.send("log_text", text, f"{tag}.md")

    def image(self, tag: str, image, step: int) -> None:
        self.send("log_image", image, f"figures/{tag}.png")

    def summary(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        self.scalars(step, metrics)

    def target_line(self, target: float, curve: list[tuple[int, float]]) -> None:
        self.send("set_tag", "target", str(target))

    def close(self) -> None:
        """The record's files as artifacts; the run FINISHED if it wrote its metrics, else KILLED if it can be
        resumed from its checkpoint, else FAILED."""
        for name in RECORD_FILES:
            path = self.run_dir / name
            if path.is_file():
                self.send("log_artifact", str(path), str(Path(name).parent) if "/" in name else None)
        if (self.run_dir / METRICS).is_file():
            status = "FINISHED"
        else:
            status = "KILLED" if (self.run_dir / CHECKPOINT).is_file() else "FAILED"
        self.send("set_terminated", status)


def default_store(run_dir: Path) -> str:
    """The SQLite store at the top of the run's directory tree (outputs/mlflow.db for a run under outputs/)."""
    return f"sqlite:///{(dashboard_root(run_dir) / STORE).resolve()}"


def artifacts_beside(uri: str) -> str | None:
    """Where an SQLite store's new experiment keeps its artifacts: beside the database (MLflow's default is
    ./mlruns under whatever directory the run started in); a server decides for itself (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / MLFLOW_ARTIFACTS).resolve().as_uri()


def experiment_id(client, name: str, artifact_location: str | None) -> str:
    """The experiment's id, created if missing (by this process or, at the same moment, another)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        return client.get_experiment_by_name(name).experiment_id


@contextmanager
def store_lock(uri: str):
    """An exclusive lock beside a local SQLite store while a client opens it (and creates its tables)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
