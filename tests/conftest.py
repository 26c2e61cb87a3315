"""Fixtures, and the setup mutation testing needs: every subprocess runs the makemore beside these tests, tqdm's
lock per process, and the fastest tests first under mutmut. Helpers live in helpers.py."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from tqdm import tqdm

from makemore.data import read_items, resolve_path

from helpers import ROOT, write_tiny_corpus

# Every subprocess runs the makemore next to these tests (mutmut's mutated copy included), not an installed one.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
# mutmut forks a process per mutant. tqdm's default lock is a multiprocessing one, shared by every fork, and its
# monitor thread takes it every 10 s: a fork that ends or is killed while holding it hangs every later fork.
tqdm.set_lock(threading.RLock())
tqdm.monitor_interval = 0


def pytest_collection_modifyitems(config, items):
    """Under mutmut, the fastest tests first: with its -x, a mutant then dies at its cheapest failing test.
    Otherwise the slow ones first (in their order): xdist's workers then end on the quick tests together, not
    one on a minute-long sweep while the other waits."""
    stats = ROOT / "mutmut-stats.json"  # ROOT is mutmut's copy of the project, mutants/
    if os.environ.get("MUTANT_UNDER_TEST") and stats.is_file():
        durations = json.loads(stats.read_text())["duration_by_test"]
        items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
    else:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's entry points and conf/, to run in: its outputs/ starts empty and stays apart."""
    path = tmp_path / "project"
    path.mkdir()
    for script in ("train.py", "sweep.py"):
        shutil.copy(ROOT / script, path)
    shutil.copytree(ROOT / "conf", path / "conf")
    return path


@pytest.fixture(scope="session")
def few_names(tmp_path_factory) -> str:
    """The override for the first 2,000 built-in names: real names for in-process runs that test the loop, not the
    lectures' losses, evaluated in a tenth of the time the whole split takes."""
    path = tmp_path_factory.mktemp("data") / "few_names.txt"
    path.write_text("\n".join(read_items(resolve_path(None))[:2000]), encoding="utf-8")
    return f"data.path={path}"


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path)
