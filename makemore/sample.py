"""Sampling: generate items from a model, and `python -m makemore.sample <run dir>` for any saved run."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

from makemore import provenance
from makemore.data import Vocab, load_dataset, tokens_of
from makemore.errors import MakemoreError
from makemore.rundir import MODEL, run_directory_of, written_by_a_run


def generate(
    model: nn.Module,
    vocab: Vocab,
    block_size: int,
    count: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    prefix: str = "",
    seed: int = 0,
    max_len: int = 256,
) -> list[str]:
    """`count` items, all drawn in parallel; temperature 0 is greedy, top_k keeps the k likeliest tokens."""
    if not temperature >= 0 or math.isinf(temperature):  # NaN fails the comparison
        raise MakemoreError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise MakemoreError(f"top_k must be at least 1, got {top_k}")
    if count < 1:
        return []
    unknown = sorted(set(tokens_of(prefix)) - set(vocab.chars[1:]))
    if unknown:
        raise MakemoreError(f"prefix has characters not in the vocabulary: {''.join(unknown)!r}")
    device = next(iter(model.state_dict().values())).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    start = ([0] * block_size + vocab.encode(prefix))[-block_size:]
    context = torch.tensor([start] * count, device=device)
    drawn = torch.zeros(count, 0, dtype=torch.long, device=device)
    for _ in range(max_len):
        with torch.no_grad():
            logits = model(context)
        if temperature == 0:
            token = logits.argmax(1, keepdim=True)
        else:
            # Shifted, in float64, before dividing: any tiny temperature then gives -inf, never inf - inf = nan.
            logits = (logits.double() - logits.double().max(1, keepdim=True).values) / temperature
            if top_k is not None and top_k < logits.shape[1]:
                kth = logits.topk(top_k, dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            token = torch.multinomial(logits.softmax(1), 1, generator=generator)
        drawn = torch.cat([drawn, token], 1)
        context = torch.cat([context[:, 1:], token], 1)
        if (drawn == 0).any(1).all():
            break
    model.train(was_training)
    items = []
    for row in drawn.tolist():
        ids = row[: row.index(0)] if 0 in row else row
        items.append(prefix + vocab.decode(ids))
    return items


def novelty(samples: list[str], words: dict[str, list[str]]) -> dict[str, float]:
    """Share of samples found in train, in dev or test (and not train), and new: how makemore shows overfitting."""
    train, held_out = set(words["train"]), set(words["dev"]) | set(words["test"])
    n = max(1, len(samples))
    in_train = sum(s in train for s in samples)
    in_held_out = sum(s in held_out and s not in train for s in samples)
    return {"train": in_train / n, "dev_test": in_held_out / n, "new": (len(samples) - in_train - in_held_out) / n}


def main(argv: list[str] | None = None) -> int:
    """`python -m makemore.sample <run dir>`: samples from model.pt alone; the shares also need the training data."""
    from makemore.checkpoint import load_model

    parser = argparse.ArgumentParser(prog="python -m makemore.sample", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a run directory holding model.pt")
    parser.add_argument("-n", "--count", type=int, default=20)
    parser.add_argument("-t", "--temperature", type=float, default=1.0)
    parser.add_argument("-k", "--top-k", type=int, default=None)
    parser.add_argument("-s", "--seed", type=int, default=0)
    parser.add_argument("-p", "--prefix", default="")
    parser.add_argument("-o", "--out", type=Path, default=None, help="also write the samples to this file")
    args = parser.parse_args(argv)
    try:
        if args.count < 1:
            raise MakemoreError(f"--count must be at least 1, got {args.count}")
        if args.out:
            check_writable(args.out)
        model, vocab, config = load_model(args.run_dir / MODEL)
        samples = generate(
            model,
            vocab,
            config["model"]["block_size"],
            args.count,
            temperature=args.temperature,
            top_k=args.top_k,
            prefix=args.prefix,
            seed=args.seed,
        )
        if args.out:
            args.out.write_text("\n".join(samples) + "\n", encoding="utf-8")
    except MakemoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot write {args.out} ({e.strerror}); -o <a file in an existing directory>", file=sys.stderr)
        return 1
    print("\n".join(samples))
    print(shares_line(samples, vocab, config["data"], args.run_dir), file=sys.stderr)
    return 0


def check_writable(out: Path) -> None:
    """-o names a new or ordinary file in an existing directory outside every run directory."""
    if out.is_dir():
        raise MakemoreError(f"-o {out} is a directory; -o <a file path>")
    if not out.parent.is_dir():
        raise MakemoreError(f"-o {out}: no directory {out.parent}; create it first, or write elsewhere")
    inside = written_by_a_run(out.resolve())
    if inside:
        if run_directory_of(inside) == inside:
            raise MakemoreError(
                f"-o {out} is inside the run directory {inside}, whose files no command changes; write elsewhere"
            )
        raise MakemoreError(
            f"-o {out} would overwrite what a sweep or report wrote in {inside}, which no command "
            "changes; write elsewhere"
        )


def shares_line(samples: list[str], vocab: Vocab, data: dict, run_dir: Path) -> str:
    """How many samples are new, in train, or only in dev/test; or why that can't be told: the data can't be read,
    or it changed since training (by the sha256 in the run's provenance; by the vocabulary for an older run)."""
    try:
        dataset = load_dataset(data["path"], 1, data["boundary"], data["fractions"], data["seed"])
        saved = provenance.read(run_dir)
        changed = provenance.data_changes(saved["data"], provenance.data_fingerprint(data["path"])) if saved else []
    except MakemoreError as e:
        return f"{len(samples)} samples; new/in-train shares skipped: the training data can't be read ({e})"
    if changed or dataset.vocab != vocab:
        why = changed[0] if changed else f"the data file {data['path']} has changed"
        return f"{len(samples)} samples; new/in-train shares skipped: {why} since training"
    shares = novelty(samples, dataset.words)
    return (
        f"{len(samples)} samples: {shares['new']:.0%} new, {shares['train']:.0%} in train, "
        f"{shares['dev_test']:.0%} in dev/test only"
    )


if __name__ == "__main__":
    sys.exit(main())
