"""Provenance: what decides a run's result besides its config, recorded before it trains, and compared later.

A run's `.hydra/provenance.json` holds its data (sha256, bytes, items, split sizes, vocabulary), its code (the
package version, the sha256 of every source file, the git commit and whether the tree was dirty, with the
uncommitted changes in `.hydra/code.patch`, and the file of a user's own model) and its environment (package
versions, device, threads, CPU, the command as typed). `rerun=` and `resume=` refuse changed data unless
`use_current_data=true`, warn of each other difference, and a rerun ends with a verdict: reproduced, or not and why.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig

from makemore.data import Dataset, read_items, resolve_path
from makemore.errors import MakemoreError
from makemore.rundir import METRICS, PATCH, PROVENANCE, read_metrics, write_json
from makemore.shell import program, shell_word, train_command

# The code that computes a run, relative to the directory that holds the package (a checkout or site-packages).
SOURCE_DIRS = ("makemore", "hydra_plugins/makemore_optuna", "hydra_plugins/makemore_population")
NOT_RUN_CODE = "makemore/experiments"  # the benchmark and experiment scripts: no run executes them
PACKAGES = ("torch", "hydra-core", "omegaconf", "numpy")  # besides python: the versions that change numbers
COMPARED_ENVIRONMENT = ("python", *PACKAGES, "device", "threads", "cpu")  # not the host or the command line
LOSSES = ("train_loss", "dev_loss", "test_loss")
COMMAND_VARIABLE = "MAKEMORE_COMMAND"  # the command as typed, set by the CLI before Hydra rewrites sys.argv


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_fingerprint(path: str | None, items: list[str] | None = None) -> dict:
    """The data file as it is now: its path, sha256, size in bytes and items (lines that are not blank)."""
    file = resolve_path(path)
    items = read_items(file) if items is None else items
    return {"path": str(file), "sha256": sha256_of(file), "bytes": file.stat().st_size, "items": len(items)}


def data_provenance(path: str | None, items: list[str], dataset: Dataset) -> dict:
    """The fingerprint, the split's sizes (items and examples per split) and the vocabulary."""
    return {
        **data_fingerprint(path, items),
        "split_items": {split: len(words) for split, words in dataset.words.items()},
        "split_examples": {split: len(y) for split, y in dataset.Y.items()},
        "vocab": "".join(dataset.vocab.chars),
    }


def package_root() -> Path:
    """The directory that holds the makemore package: a checkout, or site-packages for an installed wheel."""
    return Path(__file__).resolve().parents[1]


def git(root: Path, *args: str) -> str | None:
    """A git command's output in `root`, or None where git or a repository is missing."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: Path) -> tuple[dict | None, str]:
    """The commit of the repository that tracks the package, whether its tracked files changed since, and the
    patch of those changes; (None, "") when the package is not tracked by git (an installed wheel)."""
    if git(root, "ls-files", "--error-unmatch", "makemore/__init__.py") is None:
        return None, ""
    commit = (git(root, "rev-parse", "HEAD") or "").strip() or None
    patch = (git(root, "diff", "HEAD", "--binary") if commit else "") or ""
    return {"commit": commit, "dirty": bool(patch)}, patch


def source_hashes(root: Path) -> dict[str, str]:
    """The sha256 of every Python file of the package and its sweeper plugin, by path under `root`."""
    files = [path for folder in SOURCE_DIRS for path in sorted((root / folder).rglob("*.py"))]
    names = {path.relative_to(root).as_posix(): path for path in files if "__pycache__" not in path.parts}
    return {name: sha256_of(path) for name, path in names.items() if not name.startswith(NOT_RUN_CODE)}


def user_model_source(target: str) -> dict | None:
    """The file a user's own model comes from (its `_target_` outside the package) and its sha256."""
    if target.startswith("makemore."):
        return None
    try:
        file = getattr(importlib.import_module(target.rpartition(".")[0]), "__file__", None)
    except ImportError:
        return None
    return {"target": target, "file": file, "sha256": sha256_of(Path(file)) if file else None}


def package_version() -> str:
    try:
        return metadata.version("makemore")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


@functools.lru_cache(maxsize=1)
def code_of_package() -> tuple[dict, str]:
    """The package's version, sources and git state (read once per process), and the uncommitted patch."""
    root = package_root()
    state, patch = git_state(root)
    return {"version": package_version(), "git": state, "sources": source_hashes(root)}, patch


def code_record(model_target: str) -> tuple[dict, str]:
    """The code a run uses (the package and a user's model file), and the patch of uncommitted changes."""
    code, patch = code_of_package()
    return {**code, "user_model": user_model_source(model_target)}, patch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The device as a comparison needs it: `cpu`, or the GPU's model (`cuda: NVIDIA H100 80GB HBM3`)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name()}"
    return device


def typed_command(argv: list[str]) -> str:
    """`argv` as the bash command that gives it: `python train.py model=mlp ...`."""
    return " ".join([program(argv[0]), *map(shell_word, argv[1:])])


def command_as_typed() -> str:
    """The command line that started the run, as the user typed it: the CLI saves it before `seeds=N` and Hydra
    rewrite sys.argv, and a launcher's worker processes inherit it."""
    return os.environ.get(COMMAND_VARIABLE) or typed_command(sys.argv)


@functools.cache  # a population's members ask in turn: the installed versions stay put
def version(package: str) -> str:
    """The installed version of `package`."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_record(device: str, threads: int) -> dict:
    return {
        "python": platform.python_version(),
        **{package: version(package) for package in PACKAGES},
        "device": device_name(device),
        "threads": threads,
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "host": platform.node(),
        "command": command_as_typed(),
    }


def collect(
    model_target: str, data_path: str, items: list[str], dataset: Dataset, device: str, threads: int
) -> tuple[dict, str]:
    """A run's provenance and the patch of its uncommitted code changes (empty when there are none): the code of
    its model's class, its data (the items read from `data_path` and cut into `dataset`) and where it ran."""
    code, patch = code_record(model_target)
    record = {
        "data": data_provenance(data_path, items, dataset),
        "code": code,
        "environment": environment_record(device, threads),
    }
    return record, patch


def write(run_dir: Path, record: dict, patch: str) -> None:
    """provenance.json beside the saved config, and code.patch when the tree had uncommitted changes."""
    (run_dir / PROVENANCE).parent.mkdir(parents=True, exist_ok=True)
    if patch:
        (run_dir / PATCH).write_text(patch, encoding="utf-8")
        record["code"]["git"]["patch"] = PATCH
    write_json(run_dir / PROVENANCE, record)


def read(run_dir: Path) -> dict | None:
    """A run's recorded provenance, or None for a run recorded before provenance existed."""
    path = run_dir / PROVENANCE
    return json.loads(path.read_text()) if path.is_file() else None


def data_changes(saved: dict, now: dict) -> list[str]:
    """What differs between two fingerprints of a data file, as `sha256 1a2b3c4d → 5e6f7a8b, items 3 → 4`."""
    if saved["sha256"] == now["sha256"]:
        return []
    shown = [f"sha256 {saved['sha256'][:12]} → {now['sha256'][:12]}"]
    shown += [f"{key} {saved[key]:,} → {now[key]:,}" for key in ("items", "bytes") if saved[key] != now[key]]
    return [f"data {now['path']} changed: {', '.join(shown)}"]


def code_changes(saved: dict, now: dict) -> list[str]:
    """The package version, every source file changed, added or removed, and a user model's file if it changed."""
    changes = [f"makemore {saved['version']} → {now['version']}"] if saved["version"] != now["version"] else []
    git_then = saved.get("git") or {}
    since = f"since {git_then['commit'][:12]}" if git_then.get("commit") else "since the run"
    since += " (dirty)" if git_then.get("dirty") else ""
    old, new = saved["sources"], now["sources"]
    for path in sorted(old.keys() | new.keys()):
        if path not in new:
            changes.append(f"{path} removed {since}")
        elif path not in old:
            changes.append(f"{path} added {since}")
        elif old[path] != new[path]:
            changes.append(f"{path} changed {since}")
    model_then, model_now = saved.get("user_model"), now.get("user_model")
    if model_then and (not model_now or model_then["sha256"] != model_now["sha256"]):
        changes.append(f"{model_then['file']} (model {model_then['target']}) changed since the run")
    return changes


def environment_changes(saved: dict, now: dict) -> list[str]:
    return [
        f"{key} {saved.get(key)} → {now.get(key)}" for key in COMPARED_ENVIRONMENT if saved.get(key) != now.get(key)
    ]


def differences(saved: dict, now: dict) -> list[str]:
    """Everything recorded that differs between two provenances: data, code, then environment."""
    return (
        data_changes(saved["data"], now["data"])
        + code_changes(saved["code"], now["code"])
        + environment_changes(saved["environment"], now["environment"])
    )


def check_source(what: str, source: Path, run: DictConfig, items: list[str], device: str) -> None:
    """rerun=/resume= of `source`, as the checked config `run` would train it: changed data is refused unless
    use_current_data=true; every other difference is one warning line; a run recorded before provenance gets one
    note."""
    saved = read(source)
    if saved is None:
        print(
            f"note: {source} carries no provenance (it was recorded before makemore saved one): "
            "its data, code and environment can't be compared",
            file=sys.stderr,
        )
        return
    now = {
        "data": data_fingerprint(run.data.path, items),
        "code": code_record(run.model._target_)[0],
        "environment": environment_record(device, run.threads),
    }
    refuse_if_data_changed(what, source, data_changes(saved["data"], now["data"]), run.use_current_data)
    for line in differences(saved, now):
        print(f"warning: {line}", file=sys.stderr)


def refuse_changed_data(what: str, source: Path, data_path: str, items: list[str], accepted: bool) -> None:
    """The data file changed since `source` was trained (by its recorded sha256) is refused unless `accepted`
    (use_current_data=true)."""
    saved = read(source)
    if saved:
        changed = data_changes(saved["data"], data_fingerprint(data_path, items))
        refuse_if_data_changed(what, source, changed, accepted)


def refuse_if_data_changed(what: str, source: Path, changed: list[str], accepted: bool) -> None:
    """One line naming the change and the command that trains on the data as it is now."""
    if changed and not accepted:
        again = f"{train_command(what, source)} use_current_data=true"
        raise MakemoreError(f"{changed[0]} since {source} was trained; to train on it as it is now: {again}")


def verdict(source: Path, now: dict, metrics: dict) -> tuple[bool, str]:
    """A rerun's verdict against its source: (True, "reproduced") when everything recorded is the same and the
    losses are identical to the last digit; else (False, "differs from <source> by ..."), saying what differs."""
    then = read_metrics(source) or {}
    if then.get("status") != "ok":
        return False, f"no verdict: {source} has no final losses to compare ({METRICS}: {then.get('status', 'none')})"
    moved = [
        f"{key.removesuffix('_loss')} {then[key]!r} → {metrics[key]!r}" for key in LOSSES if then[key] != metrics[key]
    ]
    saved = read(source)
    if saved is None:
        if moved:
            return False, f"differs from {source} by {', '.join(moved)}; it carries no provenance to tell why"
        return False, (
            f"losses identical to {source}, which carries no provenance: whether its data, code and environment "
            "matched can't be told"
        )
    changed = differences(saved, now)
    if not moved and not changed:
        return True, f"reproduced: losses identical to {source} to the last digit, and nothing recorded differs"
    if not changed:
        return False, (
            f"differs from {source} by {', '.join(moved)} while nothing recorded differs: that is nondeterminism, "
            "a bug in makemore; please report it with both run directories"
        )
    by = ", ".join(moved) if moved else "its record (the losses are identical)"
    return False, f"differs from {source} by {by}; what differs: {'; '.join(changed)}"


def markdown(record: dict) -> str:
    """The provenance as a Markdown table, for TensorBoard's text tab."""
    rows = []
    for section, values in record.items():
        for key, value in values.items():
            if key == "sources":
                value = f"{len(value)} files (sha256 each in {PROVENANCE})"
            elif isinstance(value, dict | list):
                value = json.dumps(value)
            escaped = str(value).replace("|", "\\|")  # a pipe would end the table's cell
            rows.append(f"| {section}.{key} | {escaped} |")
    return "| key | value |\n| --- | --- |\n" + "\n".join(rows)
