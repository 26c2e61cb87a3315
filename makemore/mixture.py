"""Mixtures: several trained runs' next-token probabilities averaged and scored as any model is (mean
cross-entropy per next token over the same examples), and the record an ensemble of runs leaves.

Runs of any families mix: a model on windows and one on whole items predict the same next tokens in the same
order (makemore.data.build_items), so each run is reduced to the probability it gives every next token of a split,
and a mixture's loss is -log of the weighted sum of those, averaged over the tokens. The weights are equal, or
chosen on dev by greedy forward selection with replacement (Caruana et al., 2004); test never chooses anything.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from makemore import provenance
from makemore.checkpoint import load_model
from makemore.data import SPLITS, build_examples, build_items, read_items, resolve_path, split_items, tokens_of
from makemore.errors import MakemoreError
from makemore.metrics import final_summary
from makemore.models import distinct_logits, eval_rows, predict
from makemore.rundir import ENSEMBLE, HISTORY, METRICS, MODEL, new_record_directory, read_metrics, write_json

ENSEMBLES = "ensembles"
RECORDS = Path("outputs") / ENSEMBLES  # beside the runs Hydra writes under outputs/; a sweep's in its own directory
WEIGHTINGS = ("equal", "greedy")
SCORED_IN_GROUPS = ("dev", "test")  # a seed group's ensemble row: its train loss would cost the most, and tells least
GREEDY_ROUNDS = 50  # greedy selection's picks: weights are multiples of 1/50 at the finest


@dataclass
class Member:
    """A finished run, reduced to what a mixture needs of it."""

    run_dir: Path
    model_sha256: str  # which model.pt was scored: a rerun of the run writes another
    model: str  # its family (model.name)
    data: dict  # the file's sha256, the split's rule and the vocabulary: members must agree on all of it
    metrics: dict  # its own metrics.json
    probabilities: dict[str, torch.Tensor]  # by split: the probability it gives each next token, float64


@torch.no_grad()
def target_probabilities(model: torch.nn.Module, X: torch.Tensor, Y: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The probability the model gives each next token (padding left out), in the examples' order, in float64. A
    split of windows is scored once per distinct context, as loss_on scores it (the names' dev split: 2,965 of
    22,655), the same logits gathered."""
    rows = max(1, eval_rows(vocab_size) // (Y.shape[1] if Y.dim() == 2 else 1))
    distinct, inverse = distinct_logits(model, X, Y, vocab_size, rows)
    if distinct is not None:
        return F.softmax(distinct.double(), -1)[inverse, Y]
    parts = []
    for start in range(0, len(X), rows):
        logits, targets = predict(model, X[start : start + rows], Y[start : start + rows])
        kept = targets >= 0
        parts.append(F.softmax(logits[kept].double(), -1).gather(1, targets[kept, None]).squeeze(1))
    return torch.cat(parts)


def mixture_loss(probabilities: torch.Tensor, weights: torch.Tensor) -> float:
    """-log of the weighted mixture's probability of each next token ([members, tokens] probabilities), averaged."""
    return -(weights @ probabilities).log().mean().item()


def greedy_weights(dev: torch.Tensor, rounds: int = GREEDY_ROUNDS) -> torch.Tensor:
    """Caruana et al. (2004): start from nothing, add the member (again, if it is the best pick) whose addition gives
    the averaged mixture the lowest dev loss, `rounds` times; the weights are the pick counts at the best round."""
    counts, total = torch.zeros(len(dev), dtype=torch.float64), torch.zeros(dev.shape[1], dtype=torch.float64)
    best, best_counts = math.inf, counts
    for picked in range(1, rounds + 1):
        losses = -((total + dev) / picked).log().mean(1)
        choice = int(losses.argmin())  # the first of equals: the same picks every time
        counts[choice] += 1
        total += dev[choice]
        if losses[choice] < best:
            best, best_counts = losses[choice].item(), counts.clone()
    return best_counts / best_counts.sum()


def mixture_weights(members: list[Member], weighting: str) -> torch.Tensor:
    if weighting not in WEIGHTINGS:
        raise MakemoreError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    if weighting == "equal":
        return torch.full((len(members),), 1 / len(members), dtype=torch.float64)
    return greedy_weights(torch.stack([m.probabilities["dev"] for m in members]))


def mixture_losses(members: list[Member], weights: torch.Tensor) -> dict[str, float]:
    """The mixture's loss on each split its members were scored on."""
    splits = members[0].probabilities
    return {split: mixture_loss(torch.stack([m.probabilities[split] for m in members]), weights) for split in splits}


@functools.lru_cache(maxsize=4)  # a sweep's seed groups share one file: read and split it once
def split_data(path: Path, stat: tuple[int, int], fractions: tuple[float, ...], seed: int) -> tuple[dict, dict, int]:
    """The file's fingerprint (makemore.provenance's), its items split by the run's rule and the longest item's
    tokens; `stat` (its modification time and size) tells a changed file from the one read before."""
    items = read_items(path)
    longest = max(len(tokens_of(item)) for item in items)
    return provenance.data_fingerprint(str(path), items), split_items(items, fractions, seed), longest


def load_member(run_dir: Path, splits: tuple[str, ...] = SPLITS) -> Member:
    """A finished run's model scored on `splits` of its own data; a directory that is no finished run, or whose
    data file changed since it trained, is refused in one line."""
    if not run_dir.is_dir():
        raise MakemoreError(f"no run directory {run_dir}; pass the directories of finished runs (outputs/<date>/<run>)")
    metrics = read_metrics(run_dir) or {}
    status = metrics.get("status", "not finished")
    if not (run_dir / MODEL).is_file() or status != "ok":
        why = f"its status is {status}" if (run_dir / MODEL).is_file() else f"it holds no {MODEL}"
        raise MakemoreError(f"{run_dir} is no finished run ({why}); pass the directories of finished runs")
    model, vocab, config = load_model(run_dir / MODEL)
    settings = config["data"]
    path = resolve_path(settings["path"])
    if not path.is_file():
        raise MakemoreError(f"{run_dir} trained on {path}, which is gone; put the file back to score its model")
    stat = path.stat()
    fingerprint, words, longest = split_data(
        path, (stat.st_mtime_ns, stat.st_size), tuple(settings["fractions"]), settings["seed"]
    )
    saved = provenance.read(run_dir)
    changed = provenance.data_changes(saved["data"], fingerprint) if saved else []
    if changed:
        raise MakemoreError(
            f"{changed[0]} since {run_dir} trained on it, so its dev and test are not the ones it held out"
        )
    block_size = config["model"]["block_size"]
    whole = hasattr(model, "forward_items") and block_size > longest
    probabilities = {}
    for split in splits:  # a causal model whose context holds every prefix scores whole items, as it trained
        X, Y = build_items(words[split], vocab) if whole else build_examples(words[split], vocab, block_size)
        probabilities[split] = target_probabilities(model, X, Y, vocab.size)
        if not bool(torch.isfinite(probabilities[split]).all()):
            raise MakemoreError(f"the model of {run_dir} gives probabilities that are not finite; retrain it")
    return Member(
        run_dir=run_dir,
        model_sha256=provenance.sha256_of(run_dir / MODEL),
        model=config["model"]["name"],
        data={
            **fingerprint,
            "fractions": list(settings["fractions"]),
            "seed": settings["seed"],
            "vocab": "".join(vocab.chars),
        },
        metrics=metrics,
        probabilities=probabilities,
    )


def load_members(run_dirs: list[Path], splits: tuple[str, ...] = SPLITS) -> list[Member]:
    """The runs to mix: at least two, each given once, every one trained on the same data and split."""
    if len(run_dirs) < 2:
        raise MakemoreError(f"an ensemble needs at least two runs, got {len(run_dirs)}; pass more run directories")
    seen = set()
    for run_dir in run_dirs:
        if run_dir.resolve() in seen:
            raise MakemoreError(f"{run_dir} is given twice; pass each run once (--weighting greedy weighs them)")
        seen.add(run_dir.resolve())
    members = [load_member(run_dir, splits) for run_dir in run_dirs]
    first = members[0]
    for member in members[1:]:
        differing = [key for key in first.data if member.data[key] != first.data[key]]
        if differing:
            key = differing[0]
            raise MakemoreError(
                f"{member.run_dir} and {first.run_dir} were trained on different data ({key}: "
                f"{member.data[key]} against {first.data[key]}); ensemble runs of one data file and split"
            )
    return members


def write_record(members: list[Member], weights: torch.Tensor, weighting: str, records: Path = RECORDS) -> Path:
    """A new directory under `records` holding the ensemble's TensorBoard events, history.csv, its record
    (ensemble.json: which runs, their model's sha256, their weights, the losses) and, last, metrics.json as a
    run's, so that leaderboards and the dashboard show it beside the runs. Returns the directory."""
    from makemore.loggers import RunInfo
    from makemore.loggers.tensorboard import TensorBoardLogger

    losses = mixture_losses(members, weights)
    target = members[0].metrics.get("target")
    step = max(int(m.metrics.get("steps", 0)) for m in members)
    used = [m for m, w in zip(members, weights.tolist()) if w > 0]
    metrics = {
        "status": "ok",
        **{f"{split}_loss": losses[split] for split in SPLITS},
        "best_dev_loss": losses["dev"],
        "params": sum(int(m.metrics.get("params", 0)) for m in used),
        "train_seconds": sum(float(m.metrics.get("train_seconds", 0.0)) for m in members),  # every run it needed
        "target": target,
        "target_met": None if target is None else losses["dev"] < target,
    }
    hparams = {"model.name": "ensemble", "ensemble.runs": len(members), "ensemble.weighting": weighting}
    record = {
        "command": provenance.command_as_typed(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "weighting": weighting,
        "data": members[0].data,
        "runs": [
            {
                "run": str(m.run_dir),  # as given
                "dir": str(m.run_dir.resolve()),  # where --rescore finds it from any directory
                "model_sha256": m.model_sha256,
                "model": m.model,
                "weight": w,
                **{f"{split}_loss": m.metrics.get(f"{split}_loss") for split in SPLITS},
                "train_seconds": m.metrics.get("train_seconds"),
            }
            for m, w in zip(members, weights.tolist())
        ],
        "losses": losses,
        "hparams": hparams,
    }
    directory = new_record_directory(records)
    logger = TensorBoardLogger(RunInfo(directory, directory.name, None, hparams, {}, "", None))
    logger.summary(hparams, final_summary(metrics), step)
    logger.close()
    (directory / HISTORY).write_text(f"step,loss/train,loss/dev,lr\n{step},{losses['train']},{losses['dev']},\n")
    write_json(directory / ENSEMBLE, record)
    write_json(directory / METRICS, metrics)
    return directory


def ensemble_losses(run_dirs: list[Path]) -> dict[str, float] | None:
    """A seed group's ensemble on the leaderboard: its runs' equally averaged probabilities on each split, or None
    where fewer than two of them left a model, or their models cannot be read or were trained on different data."""
    files = tuple((d, (d / MODEL).stat().st_mtime_ns) for d in run_dirs if (d / MODEL).is_file())
    return scored(files) if len(files) > 1 else None


@functools.lru_cache(maxsize=64)  # a sweep's end scores its groups for its files and for TensorBoard
def scored(files: tuple[tuple[Path, int], ...]) -> dict[str, float] | None:
    try:
        members = load_members([run_dir for run_dir, _ in files], SCORED_IN_GROUPS)
    except MakemoreError:
        return None
    return mixture_losses(members, mixture_weights(members, "equal"))
