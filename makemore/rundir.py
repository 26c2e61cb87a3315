"""The run-directory contract in one place: the file names, reading and writing a run's record, finding runs.

A run directory holds `.hydra/` (the config that ran and its provenance), `metrics.json` (written last: a run
that has one ended), `model.pt`, `checkpoint.pt` (for resume=), `history.csv` and `samples.txt`. Every module
that reads or writes these files takes their names and helpers from here.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import yaml

from makemore.errors import CannotWrite, MakemoreError, refused_write
from makemore.settings import WATCH_KEYS

HYDRA_DIR = ".hydra"
CONFIG = f"{HYDRA_DIR}/config.yaml"
OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
HISTORY = "history.csv"
SAMPLES = "samples.txt"
PROVENANCE = f"{HYDRA_DIR}/provenance.json"  # data, code and environment: makemore.provenance
PATCH = f"{HYDRA_DIR}/code.patch"  # the uncommitted changes of a dirty git tree
POPULATION = f"{HYDRA_DIR}/population.json"  # a member of a population: its size, its index, the members, the engine
SWEEP_RECORD = "multirun.yaml"  # Hydra's record at a sweep's root
ENSEMBLE = "ensemble.json"  # an ensemble's record (makemore.mixture): which runs, their weights, its losses
MLFLOW_ARTIFACTS = "mlflow-artifacts"  # beside an SQLite MLflow store: copies of runs' files, not runs
REPORT_FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.png", "leaderboard_groups.csv")


def is_watch_key(key: str) -> bool:
    """`key` (dotted, e.g. `logger.wandb.mode`, or an override `progress=false`) belongs to one of the watch keys,
    which never define what a run computed (makemore.settings marks them)."""
    return key.lstrip("+~").split("=", 1)[0].split(".")[0] in WATCH_KEYS


def write_json(path: Path, obj: dict) -> None:
    """Valid JSON (no NaN or Infinity), written atomically."""
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if refused_write(error):
            raise CannotWrite(path, error) from None
        raise


def read_metrics(run_dir: Path) -> dict | None:
    """A run's metrics.json, or None when it has none (never started, still running, or killed)."""
    path = run_dir / METRICS
    return json.loads(path.read_text()) if path.is_file() else None


def ended_metrics(run_dir: Path) -> dict | None:
    """The metrics of a run that ended (ok, failed, diverged or pruned); None if it never ended or was interrupted."""
    metrics = read_metrics(run_dir)
    return None if metrics is None or metrics.get("status") == "interrupted" else metrics


def finished(run_dir: Path) -> bool:
    """The run ended with status ok: its files are final."""
    return (read_metrics(run_dir) or {}).get("status") == "ok"


def read_history(run_dir: Path) -> list[dict[str, str]]:
    """history.csv's rows (step, loss/train, loss/dev, lr; a loss left empty where that point has none), or none."""
    path = run_dir / HISTORY
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_overrides(run_dir: Path) -> list[str]:
    """The overrides a run was composed with (.hydra/overrides.yaml), or none."""
    path = run_dir / OVERRIDES
    overrides = (yaml.safe_load(path.read_text()) if path.is_file() else None) or []
    if not isinstance(overrides, list):
        raise ValueError(f"{path} holds no list of overrides")
    return [str(o) for o in overrides]


def run_directory_of(path: Path) -> Path | None:
    """The run directory that holds `path` (or is it), if any: a run's files are never changed by another command."""
    for directory in (path, *path.parents):
        if (directory / HYDRA_DIR).is_dir() or (directory / METRICS).is_file():
            return directory
    return None


def written_by_a_run(path: Path) -> Path | None:
    """The run or sweep directory whose files `path` is (or is among), or None: such files are never changed by
    another command. A report's own files (leaderboard.*) anywhere count too."""
    if path.name in REPORT_FILES and path.is_file():
        return path.parent
    for directory in (path, *path.parents):
        if (directory / HYDRA_DIR).is_dir() or (directory / METRICS).is_file() or (directory / SWEEP_RECORD).is_file():
            return directory
    return None


def refuse_inside_a_run(records: Path) -> None:
    """Refuse `records` for a command's record (an evaluation, an ensemble) where it lies inside a run's or a
    sweep's directory, whose files no other command changes."""
    inside = written_by_a_run(records.resolve())
    if inside:
        raise MakemoreError(f"{records} is inside {inside}, whose files no command changes; run from elsewhere")


def new_record_directory(records: Path) -> Path:
    """A new directory under `records`, named by the time (`_1`, `_2`, ... for two records in one second)."""
    records.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(1000):
        directory = records / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            directory.mkdir()
            return directory
        except FileExistsError:
            continue
    raise MakemoreError(f"cannot make a new record directory under {records}")


def find_runs(root: Path) -> list[Path]:
    """Every run directory under root: one that holds a metrics.json or Hydra's .hydra/ record."""
    found = {p.parent for p in root.rglob(METRICS)} | {p.parent.parent for p in root.rglob(CONFIG)}
    return sorted(d for d in found if not {"wandb", MLFLOW_ARTIFACTS} & set(d.relative_to(root).parts))


def dashboard_root(directory: Path) -> Path:
    """The directory whose TensorBoard view a run or sweep joins: the top directory of its path under the working
    directory (`outputs` for outputs/<date>/<run> and outputs/multirun/<sweep>), where `tensorboard --logdir
    outputs` looks; a directory not below one is a view of its own."""
    try:
        relative = directory.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return directory
    return Path(relative.parts[0]) if len(relative.parts) > 1 else directory
