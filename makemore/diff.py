"""`python -m makemore.diff <run A> <run B>`: one table of what differs between two runs, their config keys,
their provenance (data, code, environment, the command as typed) and their final metrics, and nothing else."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from makemore import provenance
from makemore.config import flatten, upgrade
from makemore.errors import MakemoreError
from makemore.rundir import CONFIG, read_metrics

MISSING = "-"  # a key one of the two runs does not have


def sections_of(run_dir: Path) -> dict[str, dict[str, object]]:
    """A run's config, provenance and metrics, each flattened to dotted keys."""
    if not (run_dir / CONFIG).is_file():
        raise MakemoreError(f"{run_dir} is not a run directory (no {CONFIG}); python -m makemore.diff <run A> <run B>")
    config = OmegaConf.to_container(upgrade(OmegaConf.load(run_dir / CONFIG)), resolve=True)  # as it ran
    return {
        "config": flatten(config),
        "provenance": flatten(provenance.read(run_dir) or {}),
        "metrics": flatten(read_metrics(run_dir) or {}),
    }


def differing_rows(a: Path, b: Path) -> list[tuple[str, str, str, str]]:
    """(section, key, value in A, value in B) for every key whose values differ, in each run's order."""
    first, second = sections_of(a), sections_of(b)
    rows = []
    for section in first:
        left, right = first[section], second[section]
        for key in [*left, *(k for k in right if k not in left)]:
            if left.get(key, MISSING) != right.get(key, MISSING):
                rows.append((section, key, str(left.get(key, MISSING)), str(right.get(key, MISSING))))
    return rows


def table(a: Path, b: Path) -> str:
    """The Markdown table of the differences, or a line saying there are none."""
    rows = differing_rows(a, b)
    head = f"A: {a}\nB: {b}\n\n"
    if not rows:
        return head + "no differences: config, provenance and metrics are identical"
    cells = [(section, key, left.replace("|", "\\|"), right.replace("|", "\\|")) for section, key, left, right in rows]
    lines = ["| section | key | A | B |", "| --- | --- | --- | --- |"]
    return head + "\n".join(lines + [f"| {' | '.join(row)} |" for row in cells])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m makemore.diff", description=__doc__)
    parser.add_argument("run_a", type=Path, help="a run directory")
    parser.add_argument("run_b", type=Path, help="another run directory")
    args = parser.parse_args(argv)
    try:
        print(table(args.run_a, args.run_b))
    except MakemoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
