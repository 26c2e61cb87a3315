"""`python -m makemore.view <sweep>`: one sweep alone in TensorBoard, opened on the keys it swept.

TensorBoard reads a single HParams summary per logdir and picks arbitrarily among several, so a sweep inside
outputs/ holds none of its own (outputs/dashboard is the one): `tensorboard --logdir <that sweep>` then shows
TensorBoard's own columns, every key that differs by name, which for a sweep of model families ticks keys only
some families have. This writes a view of the sweep outside outputs/, a directory of links to its runs with a
summary of its own (makemore.report.write_view_summary): the swept keys first and ticked, then the other keys
that differ and every run has (a family's own keys stay in the view of outputs/), so parallel coordinates draws
every run. It prints the command that opens it. The sweep's files are only read; running it again after the
sweep changed makes the view anew.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from makemore.errors import MakemoreError
from makemore.report import is_view_run, read_run, view_entry, write_view_summary
from makemore.rundir import find_runs
from makemore.shell import shell_word

VIEWS = Path(tempfile.gettempdir()) / "makemore-views"  # outside every logdir a user opens
EVENTS = "events.out.tfevents.*"


def make_view(sweep_dir: Path, views: Path = VIEWS) -> tuple[Path, list[str]]:
    """The view of sweep_dir (made anew) and the keys it opens on: a link per directory of the sweep that holds
    event files (its members, its seed bands), a run named after the sweep for its own events (the leaderboard's
    text and picture), and the view's summary of its runs."""
    sweep_dir = sweep_dir.resolve()
    entries = [view_entry(run, sweep_dir) for run in map(read_run, find_runs(sweep_dir)) if run is not None]
    if not entries:
        raise MakemoreError(f"{sweep_dir} holds no runs; python -m makemore.view <a sweep directory>")
    runs = [{**entry, "dir": sweep_dir / entry["dir"]} for entry in entries]
    place = hashlib.sha256(str(sweep_dir).encode()).hexdigest()[:8]  # two sweeps of one name stay apart
    view = views / f"{sweep_dir.name}_{place}"
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    for child in sorted(sweep_dir.iterdir()):
        if child.is_dir() and not is_view_run(child.name) and next(child.rglob(EVENTS), None):
            (view / child.name).symlink_to(child, target_is_directory=True)
    own_events = sorted(sweep_dir.glob(EVENTS))
    if own_events:
        (view / sweep_dir.name).mkdir()
        for events in own_events:
            (view / sweep_dir.name / events.name).symlink_to(events)
    return view, write_view_summary(view, runs, shared_only=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m makemore.view", description=__doc__)
    parser.add_argument("sweep", type=Path, help="a sweep directory (or any directory of runs)")
    args = parser.parse_args(argv)
    try:
        if not args.sweep.is_dir():
            raise MakemoreError(f"{args.sweep} is not a directory; python -m makemore.view <a sweep directory>")
        view, swept = make_view(args.sweep)
    except MakemoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"a view of {args.sweep} alone, opened on {', '.join(swept)}: {view}")
    print(f"    tensorboard --logdir {shell_word(str(view))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
