"""`python -m makemore.experiments.bench --startup`: where a command's wall time goes before its first step and after
its last, phase by phase (makemore.timeline's marks), for the default run and for population sweeps of 16 and 256
members, each run as a user types it in an empty directory; then the start-up goals against what was measured."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from makemore import timeline
from makemore.rundir import find_runs, read_metrics

ROOT = Path(__file__).resolve().parents[2]
POPULATION = ["-m", "hydra/launcher=population"]
FIRST_STEP_GOAL = 10.0  # seconds from the command to a 256-member population's first step
OVERHEAD_GOAL = 2.5  # seconds of the default run's wall time beyond its training


def timed(args: list[str]) -> tuple[float, dict[str, float], list[dict]]:
    """`python train.py <args>` in an empty directory: its wall time, each phase's first end (seconds after the
    command began), and its runs' metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp) / "timeline"
        environment = {**os.environ, timeline.VARIABLE: str(marks)}
        begin = time.time()
        done = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args, "progress=false"],
            cwd=tmp,
            env=environment,
            capture_output=True,
            text=True,
        )
        wall = time.time() - begin
        if done.returncode:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
        events = {event: when - begin for event, when in timeline.read(str(marks)).items()}
        runs = [m for m in map(read_metrics, find_runs(Path(tmp) / "outputs")) if m is not None]
    return wall, dict(sorted(events.items(), key=lambda item: item[1])), runs


def phases(wall: float, events: dict[str, float]) -> str:
    """Each phase's seconds, in order, ending at the process's exit."""
    shown, before = [], 0.0
    for event, at in [*events.items(), ("exit", wall)]:
        shown.append(f"{event} {at - before:.2f}")
        before = at
    return ", ".join(shown)


def startup(smoke: bool) -> None:
    """Print the phases of the default run and of 16- and 256-member population sweeps, then the goals."""
    steps = ["steps=20"] if smoke else []
    wall, events, [metrics] = timed(steps)
    print(f"the default run (python train.py): {wall:.2f} s; {phases(wall, events)}")
    overhead = wall - metrics["train_seconds"]
    print(
        f"    {metrics['train_seconds']:.2f} s of training + {overhead:.2f} s of the rest "
        f"(goal: the rest <= {OVERHEAD_GOAL} s)"
    )
    for seeds in (2, 4) if smoke else (16, 256):
        args = [*POPULATION, f"seeds={seeds}", "steps=20" if smoke else "steps=200"]
        wall, events, runs = timed(args)
        print(f"{seeds} members (python train.py {' '.join(args)}): {wall:.2f} s; {phases(wall, events)}")
        first = events.get("first step", float("nan"))
        goal = f" (goal <= {FIRST_STEP_GOAL:.0f} s at 256 members)" if seeds >= 256 else ""
        print(f"    {len(runs)} members; the first step {first:.2f} s after the command{goal}")
