"""Ensembles of any runs: `python -m makemore.ensemble <run dir> <run dir> ... [--weighting equal|greedy]`.

Averages the runs' next-token probabilities (makemore.mixture: runs of any families, trained on the same data and
split), prints the ensemble's loss on train, dev and test beside each run's own, and writes its record,
`outputs/ensembles/<time>/`, which leaderboards (`python sweep.py report=outputs`) and TensorBoard show beside the
runs. `--rescore <record>` scores a record's runs again and says whether its losses are reproduced; it writes
nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from makemore.data import SPLITS
from makemore.errors import MakemoreError
from makemore.mixture import (
    RECORDS,
    WEIGHTINGS,
    Member,
    load_members,
    mixture_losses,
    mixture_weights,
    write_record,
)
from makemore.report import refresh_dashboard
from makemore.rundir import ENSEMBLE, dashboard_root, refuse_inside_a_run
from makemore.shell import rescore_command


def table(members: list[Member], weights: list[float], losses: dict[str, float]) -> str:
    """A line per run (its family, its weight, its own losses) and the ensemble's line under them."""
    lines = [f"{'run':<48} {'model':<14} {'weight':>6} " + " ".join(f"{split:>7}" for split in SPLITS)]
    for member, weight in zip(members, weights):
        own = " ".join(f"{member.metrics[f'{split}_loss']:>7.4f}" for split in SPLITS)
        lines.append(f"{str(member.run_dir)[-48:]:<48} {member.model:<14} {weight:>6.3f} {own}")
    lines.append(f"{'ensemble':<48} {'':<14} {sum(weights):>6.3f} " + " ".join(f"{losses[s]:>7.4f}" for s in SPLITS))
    return "\n".join(lines)


def ensemble(run_dirs: list[Path], weighting: str, records: Path = RECORDS) -> Path:
    """Score the runs' mixture, print it, write its record and join the dashboard; returns the record's directory."""
    refuse_inside_a_run(records)
    members = load_members(run_dirs)
    weights = mixture_weights(members, weighting)
    directory = write_record(members, weights, weighting, records)
    refresh_dashboard(dashboard_root(directory), [directory])
    print(table(members, weights.tolist(), mixture_losses(members, weights)))
    return directory


def rescore(record_dir: Path) -> bool:
    """Score the runs of an ensemble's record again, with its weighting: whether every weight and loss is the
    record's to the last digit. A run whose model.pt is not the one scored then is refused."""
    path = record_dir / ENSEMBLE
    if not path.is_file():
        raise MakemoreError(f"{record_dir} holds no {ENSEMBLE}; pass an ensemble's record directory ({RECORDS}/<time>)")
    record = json.loads(path.read_text(encoding="utf-8"))
    given = [Path(run["run"]) for run in record["runs"]]  # as typed, where they are from here (for the table)
    dirs = [
        path if path.resolve() == Path(run["dir"]) else Path(run["dir"]) for path, run in zip(given, record["runs"])
    ]
    members = load_members(dirs)
    for member, run in zip(members, record["runs"]):
        if member.model_sha256 != run["model_sha256"]:
            raise MakemoreError(
                f"{member.run_dir}/model.pt is not the model the ensemble scored (sha256 {run['model_sha256'][:12]} "
                f"then, {member.model_sha256[:12]} now); nothing to rescore"
            )
    weights = mixture_weights(members, record["weighting"])
    losses = mixture_losses(members, weights)
    print(table(members, weights.tolist(), losses))
    pairs = zip(record["runs"], weights.tolist())
    changed = [f"{run['run']}'s weight {run['weight']} → {w}" for run, w in pairs if run["weight"] != w]
    changed += [f"{s} loss {record['losses'][s]} → {losses[s]}" for s in SPLITS if losses[s] != record["losses"][s]]
    verdict = "reproduced" if not changed else "differs: " + "; ".join(changed)
    print(f"rescore verdict: {verdict}")
    return not changed


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, then ensemble the runs or rescore a record; one line and exit 1 for bad input."""
    parser = argparse.ArgumentParser(prog="python -m makemore.ensemble", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dirs", type=Path, nargs="*", help="directories of finished runs, of any families")
    parser.add_argument(
        "--weighting",
        choices=WEIGHTINGS,
        default="equal",
        help="equal weights (default), or greedy forward selection on dev (Caruana et al. 2004)",
    )
    parser.add_argument("--rescore", type=Path, metavar="RECORD", help="an ensemble's record: score its runs again")
    args = parser.parse_args(argv)
    try:
        if args.rescore:
            if args.run_dirs:
                raise MakemoreError("pass run directories to ensemble, or --rescore <record>, not both")
            return 0 if rescore(args.rescore) else 1
        directory = ensemble(args.run_dirs, args.weighting)
    except MakemoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"record: {directory}; rescore it with: {rescore_command(directory)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
