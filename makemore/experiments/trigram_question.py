"""The trigram question: is a V x V x V logits table trained by gradient descent the counting model, and how
does it compare with the additive one-hot model? `python -m makemore.experiments.trigram_question` measures it all and
writes report.md and its plot, from the numbers, into outputs/trigram_question/<time>/ (`--docs` also into docs/).

Every model here predicts from the two previous tokens only, so a full-batch gradient is a sum over the V^2
contexts weighted by their (context, next) counts: training on those sufficient statistics takes the same
steps as training on all 182,625 examples, thousands of times faster. The user's own recipe is also run
through train.py's code path, and the two agree."""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from makemore.data import Dataset, load_dataset
from makemore.models import Additive, NgramCounts, NgramTable

ALPHAS = (0.0, 0.01, 0.1, 1.0)
L2_STRENGTHS = (0.001, 0.01, 0.1)
RECIPE = {"lr": 50.0, "steps": 200}  # the user's: randn init, full batch, lr 50, 200 steps
SPLITS = ("train", "dev", "test")


class ContextStats:
    """(context, next) counts of one split over all V^2 contexts: enough to compute its exact mean loss."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, vocab_size: int):
        self.contexts = torch.cartesian_prod(
            torch.arange(vocab_size), torch.arange(vocab_size)
        )  # the table's row order
        counting = NgramCounts(vocab_size, 2)
        counting.fit(X, Y)
        self.counts = counting.counts.double()
        first_letter = self.contexts.eq(0).all(1)  # context (boundary, boundary): the item's first letter
        self.counts_later = self.counts.clone()
        self.counts_later[first_letter] = 0
        self.seen = self.counts.sum(1) > 0

    def loss(self, model: nn.Module, later_only: bool = False) -> torch.Tensor:
        """Mean cross-entropy over the split (or over its targets after the first letter)."""
        counts = self.counts_later if later_only else self.counts
        log_probs = F.log_softmax(model(self.contexts).double(), 1)
        terms = torch.where(counts > 0, counts * log_probs, torch.zeros_like(log_probs))  # 0 * -inf counts as 0
        return -terms.sum() / counts.sum()


def mean_kl(p: torch.Tensor, log_q: torch.Tensor) -> float:
    """Mean over rows of KL(p || q), for rows of probabilities p and log-probabilities log_q."""
    terms = torch.where(p > 0, p * (p.log() - log_q), torch.zeros_like(p))
    return terms.sum(1).mean().item()


def count_probabilities(stats: ContextStats, alpha: float) -> torch.Tensor:
    smoothed = stats.counts + alpha
    return smoothed / smoothed.sum(1, keepdim=True)


def train_on_stats(
    model: nn.Module,
    stats: ContextStats,
    steps: int,
    optimizer: torch.optim.Optimizer,
    l2: float = 0.0,
    kl_to: torch.Tensor | None = None,
    until_flat: float | None = None,
) -> dict:
    """Full-batch descent on the train statistics; records loss (and KL to kl_to on seen contexts) each 10 steps."""
    curve, kl, start = [], [], time.perf_counter()
    step = 0
    for step in range(1, steps + 1):
        loss = stats.loss(model)
        objective = loss + l2 * sum((p**2).mean() for p in model.parameters())  # lecture 1's regulariser
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        if step % 10 == 0 or step == 1:
            curve.append((step, loss.item()))
            if kl_to is not None:
                with torch.no_grad():
                    log_q = F.log_softmax(model(stats.contexts[stats.seen]).double(), 1)
                kl.append((step, mean_kl(kl_to[stats.seen], log_q)))
            if until_flat and len(curve) > 20 and curve[-21][1] - curve[-1][1] < until_flat:
                break  # the train loss moved less than until_flat over the last 200 steps
    return {"curve": curve, "kl": kl, "steps": step, "seconds": time.perf_counter() - start}


def evaluate(model: nn.Module, stats: dict[str, ContextStats]) -> dict:
    with torch.no_grad():
        losses = {s: stats[s].loss(model).item() for s in SPLITS}
        losses.update({f"{s}_later": stats[s].loss(model, later_only=True).item() for s in SPLITS})
    return losses


def framework_recipe_run() -> dict:
    """The user's recipe through train.py's own path: model=trigram_table optim=full_batch."""
    from makemore.train import train_in_process

    return train_in_process(
        "model=trigram_table", "optim=full_batch", "logger=none", "progress=false", "samples=1", "checkpoint_interval=0"
    )


def table_model(vocab_size: int, seed: int) -> NgramTable:
    torch.manual_seed(seed)  # the same randn init train.py draws with this seed
    return NgramTable(vocab_size, 2)


def additive_model(vocab_size: int, seed: int) -> Additive:
    torch.manual_seed(seed)
    return Additive(vocab_size, 2)


def best_alpha(table: NgramTable, stats: ContextStats) -> tuple[float, float]:
    """The smoothing alpha whose count model is closest (mean KL on seen contexts) to a trained table."""
    with torch.no_grad():
        log_q = F.log_softmax(table(stats.contexts[stats.seen]).double(), 1)
    grid = [10 ** (k / 20) for k in range(-80, 41)]  # 1e-4 .. 100
    scores = [(mean_kl(count_probabilities(stats, a)[stats.seen], log_q), a) for a in grid]
    kl, alpha = min(scores)
    return alpha, kl


def interaction_example(stats: ContextStats, vocab, min_count: int = 100, min_pair: int = 10) -> dict | None:
    """Two first and two second characters whose log-odds interact: an additive model forces the interaction to 0.

    With logits a[c1] + b[c2], the log-odds between targets y and z obey
    LOR(c1,c2) - LOR(c1,c2') - LOR(c1',c2) + LOR(c1',c2') = 0 for every c1, c1', c2, c2'.
    Only contexts seen min_count times, and targets seen min_pair times in each of the four, count as evidence.
    """
    V = vocab.size
    probs = count_probabilities(stats, 0.1).view(V, V, V)
    support = stats.counts.sum(1).view(V, V)
    best = None
    frequent = [(a, b) for a in range(V) for b in range(V) if support[a, b] >= min_count]
    firsts = sorted({a for a, _ in frequent})
    seconds = sorted({b for _, b in frequent})
    logp = probs.log()
    counts = stats.counts.view(V, V, V)
    for (a1, a2), (b1, b2) in itertools.product(itertools.combinations(firsts, 2), itertools.combinations(seconds, 2)):
        if min(support[a1, b1], support[a1, b2], support[a2, b1], support[a2, b2]) < min_count:
            continue
        lor = logp[a1, b1] - logp[a1, b2] - logp[a2, b1] + logp[a2, b2]  # per target; differences give the log-odds
        well_seen = torch.stack([counts[a, b] for a in (a1, a2) for b in (b1, b2)]).min(0).values >= min_pair
        gaps = (lor[:, None] - lor[None, :]).abs()
        gaps[~(well_seen[:, None] & well_seen[None, :])] = 0
        value, flat = gaps.view(-1).max(0)
        if best is None or value > best[0]:
            y, z = divmod(flat.item(), V)
            best = (value.item(), a1, a2, b1, b2, y, z)
    if best is None:
        return None
    value, a1, a2, b1, b2, y, z = best
    ch = vocab.chars
    cells = [
        {"context": ch[a] + ch[b], "p_y": probs[a, b, y].item(), "p_z": probs[a, b, z].item(), "n": int(support[a, b])}
        for a in (a1, a2)
        for b in (b1, b2)
    ]
    return {"interaction": value, "y": ch[y], "z": ch[z], "cells": cells}


def run_experiment(dataset: Dataset, seed: int = 42, with_framework: bool = True, max_steps: int = 20_000) -> dict:
    """Every row of the report, measured."""
    torch.set_num_threads(1)
    V = dataset.vocab.size
    stats = {s: ContextStats(dataset.X[s], dataset.Y[s], V) for s in SPLITS}
    train = stats["train"]
    mle = count_probabilities(train, 0.0)
    rows, curves, result = [], {}, {}

    for alpha in ALPHAS:
        counts = NgramCounts(V, 2, alpha)
        counts.fit(dataset.X["train"], dataset.Y["train"])
        rows.append(
            {
                "model": f"trigram_count α={alpha:g}",
                "params": V**3,
                **evaluate(counts, stats),
                "steps": 0,
                "seconds": 0.0,
            }
        )
    unseen_dev = int((stats["dev"].counts * ((train.counts == 0) & train.seen[:, None])).sum())
    unseen_context_dev = int(stats["dev"].counts[~train.seen].sum())
    result["unseen"] = {
        "dev_targets_unseen_triple": unseen_dev,
        "dev_targets_unseen_context": unseen_context_dev,
        "dev_targets": int(stats["dev"].counts.sum()),
        "unseen_contexts": int((~train.seen).sum()),
        "contexts": V * V,
    }

    table = table_model(V, seed)
    initial = table.W.detach().clone().view(V * V, V)
    recipe = train_on_stats(
        table, train, RECIPE["steps"], torch.optim.SGD(table.parameters(), lr=RECIPE["lr"]), kl_to=mle
    )
    rows.append({"model": "trigram_table, user's recipe", "params": V**3, **evaluate(table, stats), **_cost(recipe)})
    curves["trigram_table, user's recipe"] = recipe
    result["recipe_kl"] = recipe["kl"][-1][1]

    table = table_model(V, seed)
    converged = train_on_stats(
        table, train, max_steps, torch.optim.Adam(table.parameters(), lr=0.1), kl_to=mle, until_flat=1e-5
    )
    rows.append(
        {"model": "trigram_table, converged (Adam)", "params": V**3, **evaluate(table, stats), **_cost(converged)}
    )
    curves["trigram_table, converged (Adam)"] = converged
    moved = (table.W.detach().view(V * V, V) - initial).abs().sum(1)
    result["converged_kl"] = converged["kl"][-1][1]
    result["unseen_rows_moved"] = moved[~train.seen].max().item()
    result["seen_rows_moved"] = moved[train.seen].min().item()
    result["table_converged_train"] = rows[-1]["train"]
    result["counts_mle_train"] = rows[0]["train"]

    result["l2"] = []
    for l2 in L2_STRENGTHS:
        table = table_model(V, seed)
        fit = train_on_stats(
            table, train, max_steps, torch.optim.Adam(table.parameters(), lr=0.1), l2=l2, until_flat=1e-5
        )
        alpha, kl = best_alpha(table, train)
        rows.append({"model": f"trigram_table, L2 {l2:g}", "params": V**3, **evaluate(table, stats), **_cost(fit)})
        result["l2"].append(
            {
                "l2": l2,
                "alpha": alpha,
                "kl": kl,
                "dev": rows[-1]["dev"],
                "unseen_rows_max": table.W.detach().view(V * V, V)[~train.seen].abs().max().item(),
            }
        )

    additive = additive_model(V, seed)
    fit = train_on_stats(additive, train, RECIPE["steps"], torch.optim.SGD(additive.parameters(), lr=RECIPE["lr"]))
    rows.append({"model": "additive, user's recipe", "params": 2 * V * V, **evaluate(additive, stats), **_cost(fit)})
    curves["additive, user's recipe"] = fit
    additive = additive_model(V, seed)
    fit = train_on_stats(additive, train, max_steps, torch.optim.Adam(additive.parameters(), lr=0.1), until_flat=1e-5)
    rows.append({"model": "additive, converged (Adam)", "params": 2 * V * V, **evaluate(additive, stats), **_cost(fit)})
    curves["additive, converged (Adam)"] = fit
    result["additive_converged_train"] = rows[-1]["train"]
    result["interaction"] = interaction_example(train, dataset.vocab)

    if with_framework:
        metrics = framework_recipe_run()
        result["framework_recipe"] = metrics
        rows.append(
            {
                "model": "trigram_table, user's recipe via train.py",
                "params": metrics["params"],
                "train": metrics["train_loss"],
                "dev": metrics["dev_loss"],
                "test": metrics["test_loss"],
                "steps": metrics["steps"],
                "seconds": metrics["train_seconds"],
            }
        )
    result["rows"], result["curves"], result["vocab_size"] = rows, curves, V
    return result


def _cost(fit: dict) -> dict:
    return {"steps": fit["steps"], "seconds": fit["seconds"]}


def references() -> list[dict]:
    """bigram counts and the default MLP, through train.py's own path."""
    from makemore.train import train_in_process

    rows = []
    for model in ("bigram_count", "mlp"):
        m = train_in_process(f"model={model}", "logger=none", "progress=false", "samples=1", "checkpoint_interval=0")
        rows.append(
            {
                "model": f"{model} (reference)",
                "params": m["params"],
                "train": m["train_loss"],
                "dev": m["dev_loss"],
                "test": m["test_loss"],
                "steps": m["steps"],
                "seconds": m["train_seconds"],
            }
        )
    return rows


def plot(result: dict, path: Path) -> None:
    from makemore import plots

    figure, (left, right) = plots.subplots(1, 2, figsize=(13, 5))
    for name, fit in result["curves"].items():
        left.plot(*zip(*fit["curve"]), label=name)
    left.axhline(result["counts_mle_train"], color="black", linestyle="--", label="trigram counts α=0 (train)")
    left.set_xscale("log")
    left.set_xlabel("full-batch step")
    left.set_ylabel("train loss")
    left.set_ylim(1.9, 3.5)
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    left.set_title("loss against step")
    for name in ("trigram_table, user's recipe", "trigram_table, converged (Adam)"):
        right.plot(*zip(*result["curves"][name]["kl"]), label=name)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("full-batch step")
    right.set_ylabel("mean KL(counts || table) over seen contexts")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    right.set_title("table against counts")
    figure.savefig(path, dpi=110, bbox_inches="tight")


def fmt(x) -> str:
    return "∞" if isinstance(x, float) and math.isinf(x) else (f"{x:.4f}" if isinstance(x, float) else f"{x:,}")


def render(result: dict, seconds: float) -> str:
    """The report: every number below comes from `result`."""
    rows = result["rows"]
    by = {r["model"]: r for r in rows}
    table = [
        "| model | free params | train | dev | test | dev, first letter not scored | steps | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        table.append(
            f"| {r['model']} | {r['params']:,} | {fmt(r['train'])} | {fmt(r['dev'])} | {fmt(r['test'])} | "
            f"{fmt(r['dev_later']) if 'dev_later' in r else ''} | {r['steps']:,} | {r['seconds']:.2f} |"
        )
    u = result["unseen"]
    recipe, converged = by["trigram_table, user's recipe"], by["trigram_table, converged (Adam)"]
    add_recipe, add_conv = by["additive, user's recipe"], by["additive, converged (Adam)"]
    counts01 = by["trigram_count α=0.1"]
    gap = result["additive_converged_train"] - result["table_converged_train"]
    ex = result["interaction"] or {"interaction": math.nan, "y": "?", "z": "?", "cells": []}
    cells = (
        "; ".join(
            f"'{c['context']}' (seen {c['n']:,} times): P({ex['y']})={c['p_y']:.3f}, P({ex['z']})={c['p_z']:.3f}"
            for c in ex["cells"]
        )
        or "(none in this data)"
    )
    l2 = "\n".join(
        f"| {e['l2']:g} | {e['alpha']:.3g} | {e['kl']:.4f} | {e['dev']:.4f} | {e['unseen_rows_max']:.2e} |"
        for e in result["l2"]
    )
    framework = result.get("framework_recipe")
    agreement = (
        (
            f"The same recipe through `python train.py model=trigram_table optim=full_batch` (the framework's own "
            f"minibatch-free loop over all examples) ends at train {framework['train_loss']:.4f} / dev "
            f"{framework['dev_loss']:.4f}, against {recipe['train']:.4f} / {recipe['dev']:.4f} here: the "
            "sufficient-statistics shortcut takes the same steps."
        )
        if framework
        else ""
    )
    return f"""# The trigram question, measured

Generated by `python -m makemore.experiments.trigram_question` on {datetime.now():%Y-%m-%d} in {seconds:.0f} s on one CPU core.
Standard split (`random.seed(42)`, 80/10/10 by words, {u["dev_targets"]:,} dev targets). Nothing below is typed by hand.

Conventions: every item is padded with two boundary tokens, so all 228,146 targets are scored, the first
letter included. The common `'.' + w + '.'` trigram set never scores the first letter (196,113 targets);
the column "dev, first letter not scored" gives that convention, which is why losses near 2.09 circulate online.

![loss against step, and KL to the counts](trigram_question.png)

{chr(10).join(table)}

## 1. Are the two implementations equivalent?

No. Implementation 1 gives each of the {u["contexts"]} (c1, c2) contexts its own row of {result["vocab_size"]} logits
({recipe["params"]:,} free parameters). Implementation 2 gives logits W[c1] + W[V + c2]
({add_recipe["params"]:,} parameters): the two characters can only add their evidence. Trained to convergence
the additive model's train loss is {result["additive_converged_train"]:.4f}, the floor of the additive assumption;
the table reaches {result["table_converged_train"]:.4f}. The gap, {gap:.4f} nats per character, is the price of
assuming additivity.

A context no additive model can match: with logits a[c1] + b[c2], the log-odds between two next letters
y and z must satisfy LOR(c1,c2) − LOR(c1,c2′) − LOR(c1′,c2) + LOR(c1′,c2′) = 0. In the counts (α = 0.1,
contexts seen at least 100 times, each letter at least 10 times in each) this interaction is {ex["interaction"]:.2f} nats for y = '{ex["y"]}', z = '{ex["z"]}'
over the contexts {cells}. Whatever its weights, an additive model gets at least one of these four wrong.

## 2. Which converges to a lower loss?

The table. With the user's recipe (randn init, full batch, lr 50, 200 steps) the table reaches train
{recipe["train"]:.4f} / dev {recipe["dev"]:.4f} and the additive model train {add_recipe["train"]:.4f} / dev
{add_recipe["dev"]:.4f}. Converged: table train {converged["train"]:.4f} / dev {converged["dev"]:.4f}; additive
train {add_conv["train"]:.4f} / dev {add_conv["dev"]:.4f}. On dev the converged table is hurt by contexts it never
saw (below); regularised (L2) it gives the best dev loss of the gradient-trained models. The smoothed counts
(α = 0.1) give dev {counts01["dev"]:.4f}. {agreement}

## 3. Is implementation 1 a lookup table trained by gradient descent, equivalent to counting?

It is a lookup table, and on contexts seen in training gradient descent drives it to the counting model:
the mean KL divergence from the α = 0 counts to softmax(W[c1, c2]) over seen contexts is
{result["recipe_kl"]:.4f} after the user's 200 steps and {result["converged_kl"]:.5f} at convergence (right plot).
It is not equivalent everywhere:

- Contexts never seen in training ({u["unseen_contexts"]} of {u["contexts"]}) get no gradient at all: their rows
  moved by at most {result["unseen_rows_moved"]:.1e} from the random init (seen rows moved at least
  {result["seen_rows_moved"]:.2f}). Counting gives them a uniform (α = 0) or smoothed distribution instead.
  {u["dev_targets_unseen_context"]:,} dev targets have such a context.
- Counts with α = 0 give probability 0, so infinite dev loss, to {u["dev_targets_unseen_triple"]:,} dev targets whose
  (c1, c2, c3) never occurs in train (their context does): the dev loss above is ∞, an honest answer. The
  table only approaches 0 as its logits run to −∞.
- L2 regularisation (`loss + λ·mean(W²)`, as in lecture 1) is the gradient-descent analogue of smoothing: it also
  pulls unseen rows to 0, i.e. uniform. The α whose count model is closest (mean KL over seen contexts) to each
  regularised table:

| λ | best-matching α | its KL | table dev | largest unseen-row logit |
| ---: | ---: | ---: | ---: | ---: |
{l2}

Stronger L2 matches stronger smoothing.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m makemore.experiments.trigram_question", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=None, help="report directory (default outputs/trigram_question/<time>)"
    )
    parser.add_argument("--docs", action="store_true", help="also copy the report into docs/")
    args = parser.parse_args(argv)
    out = args.out or Path("outputs") / "trigram_question" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dataset = load_dataset(None, 2)
    result = run_experiment(dataset)
    result["rows"] += references()
    plot(result, out / "trigram_question.png")
    (out / "trigram_question.md").write_text(render(result, time.perf_counter() - start), encoding="utf-8")
    print((out / "trigram_question.md").read_text(encoding="utf-8"))
    if args.docs:
        docs = Path("docs")  # the checkout's, run from its root as the README does
        docs.mkdir(exist_ok=True)
        for name in ("trigram_question.md", "trigram_question.png"):
            shutil.copy(out / name, docs / name)
    print(f"written: {out}/trigram_question.{{md,png}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
