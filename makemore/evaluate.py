"""Evaluation: a saved model's loss on a split of its own data or on any UTF-8 file, without training.

`python -m makemore.evaluate <run dir> [<run dir> ...] [--split test|dev|train|all] [--data FILE] [--json]`.
The loss is the training loss's: mean cross-entropy per next character, the end of each item counted as one, in
nats and in bits. Items holding a character a model never saw are refused by name, or dropped and counted with
`--skip-unseen`. Each evaluation is a record of its own, `outputs/evaluations/<time>/evaluation.json`; the runs'
files are never touched.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from makemore import provenance
from makemore.data import SPLITS, build_examples, build_items, read_items, resolve_path, split_items, tokens_of
from makemore.errors import MakemoreError
from makemore.models import loss_on
from makemore.rundir import MODEL, new_record_directory, refuse_inside_a_run, run_directory_of, write_json

CHOICES = (*SPLITS, "all")
RECORDS = Path("outputs") / "evaluations"  # beside the runs Hydra writes under outputs/, never inside one
EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class Evaluation:
    """One model's score on one set of items."""

    run: str  # the run directory, as given
    model_sha256: str  # which model.pt was scored: a rerun of the run writes another
    items: int  # items scored
    characters: int  # next characters predicted: every item's characters and its end
    skipped_items: int  # items dropped by --skip-unseen for characters the model never saw
    unseen: str  # those characters, sorted
    loss: float  # nats per character
    bits_per_character: float


def evaluate(
    run_dir: Path, split: str, data: Path | None = None, skip_unseen: bool = False, given_as: str = "--data "
) -> Evaluation:
    """Score the model of `run_dir` on `split` of its own data, or of the file `data` (split by the run's rule;
    'all' scores every item); `given_as` names the option that gave the file."""
    from makemore.checkpoint import load_model  # torch.load: only once a run is scored

    if split not in CHOICES:
        raise MakemoreError(f"unknown split {split!r}; choose one of {', '.join(CHOICES)}")
    model, vocab, config = load_model(run_dir / MODEL)
    settings = config["data"]
    if data is None:
        items = own_items(run_dir, settings)
    else:
        items = read_items(data, given_as)
    if split != "all":
        items = split_items(items, tuple(settings["fractions"]), settings["seed"])[split]
    known = set(vocab.chars[1:])
    unseen = sorted({token for item in items for token in tokens_of(item)} - known)
    kept = [item for item in items if known.issuperset(tokens_of(item))] if unseen else items
    if unseen and not skip_unseen:
        shown = "".join(unseen[:20]) + ("..." if len(unseen) > 20 else "")
        raise MakemoreError(
            f"{len(items) - len(kept):,} of {len(items):,} items hold characters the model never saw "
            f"({shown!r}; {vocab.boundary!r} is its end-of-item token); pass --skip-unseen to score the other "
            f"{len(kept):,}"
        )
    if not kept:
        raise MakemoreError(f"no item is left to score: every one holds characters the model never saw ({unseen})")
    block_size = config["model"]["block_size"]
    if hasattr(model, "forward_items") and block_size > max(len(tokens_of(item)) for item in kept):
        X, Y = build_items(kept, vocab)  # a causal model whose context holds every prefix: as it trained
    else:
        X, Y = build_examples(kept, vocab, block_size)
    loss = loss_on(model, X, Y, vocab.size)
    if not math.isfinite(loss):
        raise MakemoreError(f"the model of {run_dir} gives a loss of {loss} (its weights are not finite); retrain it")
    return Evaluation(
        run=str(run_dir),
        model_sha256=provenance.sha256_of(run_dir / MODEL),
        items=len(kept),
        characters=int((Y >= 0).sum()),
        skipped_items=len(items) - len(kept),
        unseen="".join(unseen),
        loss=loss,
        bits_per_character=loss / math.log(2),
    )


def own_items(run_dir: Path, settings: dict) -> list[str]:
    """The items of the run's own data file, refused if the file changed since the run trained on it."""
    path = resolve_path(settings["path"])
    items = read_items(path)
    saved = provenance.read(run_dir)
    changed = provenance.data_changes(saved["data"], provenance.data_fingerprint(str(path), items)) if saved else []
    if changed:
        raise MakemoreError(
            f"{changed[0]} since {run_dir} trained on it, so its splits are not the ones it held out; "
            f"score the file as it is now with --data {path}"
        )
    return items


def evaluated_data(split: str, data: Path | None) -> dict:
    """What was scored: the runs' own data (each run's file, checked against its provenance) or the given file."""
    if data is None:
        return {"source": "the runs' own data", "split": split}
    return {"source": str(data), "sha256": provenance.sha256_of(data), "split": split}


def write_evaluation(scores: list[Evaluation], data: dict, records: Path = RECORDS) -> Path:
    """A new directory under `records` holding evaluation.json: what was scored, on what, and the losses."""
    refuse_inside_a_run(records)
    directory = new_record_directory(records)
    record = {
        "command": provenance.command_as_typed(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": data,
        "evaluations": [asdict(score) for score in scores],
    }
    write_json(directory / EVALUATION_FILE, record)
    return directory / EVALUATION_FILE


def summary(score: Evaluation, split: str, data: Path | None) -> str:
    """One line per run: its loss in nats and bits per character, on what, and what was dropped."""
    what = f"the {split} split of {data}" if data and split != "all" else str(data) if data else f"the {split} split"
    skipped = f"; {score.skipped_items:,} skipped for {score.unseen!r}" if score.skipped_items else ""
    return (
        f"{score.run}: {score.loss:.4f} nats/char, {score.bits_per_character:.4f} bits/char on {what} "
        f"({score.items:,} items, {score.characters:,} characters{skipped})"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m makemore.evaluate <run dir> ...`: print each model's loss and write the evaluation's record."""
    parser = argparse.ArgumentParser(prog="python -m makemore.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="run directories holding model.pt")
    parser.add_argument("--split", default=None, choices=CHOICES, help="test by default; all with --data")
    parser.add_argument("--data", type=Path, default=None, help="a UTF-8 file, one item per line")
    parser.add_argument("--skip-unseen", action="store_true", help="drop items with characters a model never saw")
    parser.add_argument("--json", action="store_true", help="print the record as JSON, for scripts")
    args = parser.parse_args(argv)
    split = args.split or ("all" if args.data else "test")
    try:
        for run_dir in args.run_dirs:
            if run_directory_of(run_dir.resolve()) != run_dir.resolve():
                raise MakemoreError(f"{run_dir} is not a run directory; pass one that holds {MODEL}")
        scores = [evaluate(run_dir, split, args.data, args.skip_unseen) for run_dir in args.run_dirs]
        path = write_evaluation(scores, evaluated_data(split, args.data))
    except MakemoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(path.read_text(), end="")
    else:
        print("\n".join(summary(score, split, args.data) for score in scores))
    print(f"record: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
