"""Benchmark: `python -m makemore.experiments.bench` prints throughput against the lecture's hand loop (autograd,
and the hand-derived backward pass of makemore/backprop.py), time to the 2.2 target, the evaluation share, peak memory
and the time of lecture 2's whole run with each backward pass; `--parallel` also times a 4-member sweep with
joblib against the basic launcher; `--startup` where a command's time goes before its first step and after its
last (makemore.experiments.startup). Figures are ratios or timings taken in this one command, on one CPU core."""

from __future__ import annotations

import argparse
import functools
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from makemore.experiments.startup import startup
from makemore.rundir import find_runs, read_metrics

ROOT = Path(__file__).resolve().parents[2]


def hand_loop_steps_per_second(X: torch.Tensor, Y: torch.Tensor, steps: int, batch: int = 32) -> float:
    """Lecture 2's training loop as written there: emb 10, hidden 200, block 3, batch 32, manual SGD."""
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, 27), generator=g)
    b2 = torch.randn(27, generator=g)
    parameters = [C, W1, b1, W2, b2]
    for p in parameters:
        p.requires_grad = True
    lossi = []
    start = time.perf_counter()
    for i in range(steps):
        ix = torch.randint(0, X.shape[0], (batch,))
        emb = C[X[ix]]
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Y[ix])
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < steps // 2 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.log10().item())
    return steps / (time.perf_counter() - start)


def kernels_only_steps_per_second(X: torch.Tensor, Y: torch.Tensor, steps: int) -> float:
    """Autograd's forward and backward of the same model alone: no sampling, no update. No autograd loop beats it."""
    from makemore.models import MLP

    model = MLP(27, 3, emb=10, hidden=200, init="randn")
    batches = torch.randint(0, X.shape[0], (steps, 32))
    xs, ys = X[batches], Y[batches]
    start = time.perf_counter()
    for i in range(steps):
        F.cross_entropy(model(xs[i]), ys[i]).backward()
    return steps / (time.perf_counter() - start)


def framework_steps_per_second(steps: int, *overrides: str) -> float:
    """The same model, batch and steps through train.py's own code path, TensorBoard logging on."""
    from makemore.train import train_in_process

    lecture = ["experiment=karpathy_mlp", f"steps={steps}", f"eval_interval={steps}", "progress=false", "samples=1"]
    return train_in_process(*lecture, *overrides)["steps_per_second"]


def throughput(steps: int, repeats: int) -> dict:
    """Median steps/s of each loop, and median ratios of back-to-back measurements: this VM's speed drifts."""
    from makemore.data import load_dataset

    torch.set_num_threads(1)
    dataset = load_dataset(None, 3)
    X, Y = dataset.X["train"], dataset.Y["train"]
    loops = {
        "hand": lambda: hand_loop_steps_per_second(X, Y, steps),
        "framework": lambda: framework_steps_per_second(steps),
        "manual": lambda: framework_steps_per_second(steps, "model.backward=manual"),
        "kernels": lambda: kernels_only_steps_per_second(X, Y, steps),
        "hand_256": lambda: hand_loop_steps_per_second(X, Y, steps // 4, batch=256),
        "manual_256": lambda: framework_steps_per_second(steps // 4, "model.backward=manual", "batch_size=256"),
    }
    runs: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):  # alternating, so that each pair shares the machine's mood
        for name, loop in loops.items():
            runs[name].append(loop())

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(runs[a], runs[b]))

    return {
        **{name: statistics.median(values) for name, values in runs.items()},
        "ratio": ratio("framework", "hand"),
        "ceiling": ratio("kernels", "hand"),
        "manual_ratio": ratio("manual", "hand"),
        "manual_over_autograd": ratio("manual", "framework"),
        "manual_ratio_256": ratio("manual_256", "hand_256"),
    }


def lecture_run_seconds(*overrides: str) -> dict:
    """`python train.py experiment=karpathy_mlp` (200k SGD steps) in this process: its training time and dev loss."""
    from makemore.train import train_in_process

    metrics = train_in_process("experiment=karpathy_mlp", "progress=false", "logger=none", "samples=1", *overrides)
    return {"seconds": metrics["train_seconds"], "dev": metrics["dev_loss"]}


def default_run(*overrides: str) -> dict:
    """`python train.py` as a user runs it: its metrics, its whole-process time to target, its peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        subprocess.run(
            [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={tmp}", "progress=false", *overrides],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        wall = time.time() - start
        metrics = read_metrics(Path(tmp))
    metrics["process_seconds"] = wall
    if "target_reached_at" in metrics:
        metrics["process_seconds_to_target"] = metrics["target_reached_at"] - start
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return metrics


def timed_sweep(script: str, *overrides: str) -> tuple[float, list[dict]]:
    """`python <script> <overrides>` into a throwaway sweep directory: its wall time and its members' metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            str(ROOT / script),
            *overrides,
            "progress=false",
            "logger=none",
            f"hydra.sweep.dir={tmp}",
        ]
        start = time.time()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        wall = time.time() - start
        return wall, [m for m in map(read_metrics, find_runs(Path(tmp))) if m is not None]


def sweep_seconds(*launcher: str, steps: int = 15000) -> float:
    """Wall time of a 4-member MLP sweep."""
    return timed_sweep("train.py", "-m", "model.emb=8,10,12,14", f"steps={steps}", *launcher)[0]


# The sweeps a population is measured on, as a user types them: lecture 2's whole run (200k SGD steps at batch 32)
# and the default MLP (3,000 AdamW steps at batch 256), each over 16 seeds.
POPULATION_RECIPES = {
    "experiment=karpathy_mlp seeds=16": ["experiment=karpathy_mlp"],
    "seeds=16 (the default MLP)": [],
}
LAUNCHERS = {
    "basic launcher": [],
    "joblib, 2 jobs": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "population": ["hydra/launcher=population"],
}


def member_steps_per_second(recipe: list[str], launcher: list[str], seeds: int) -> float:
    """A sweep's members' steps, all of them, per second of the whole command's wall time."""
    wall, members = timed_sweep("train.py", "-m", *recipe, f"seeds={seeds}", *launcher)
    return sum(m["steps"] for m in members) / wall


def stacked_step_ms(
    cfg, X: torch.Tensor, Y: torch.Tensor, vocab_size: int, members: int, steps: int
) -> tuple[float, float]:
    """One core's milliseconds per member-step of the model of `cfg` stacked `members` at a time (engine and
    optimizer, on fixed batches from X, Y), and torch.tanh's share of that time: the kernels a solo run runs too."""
    from makemore.models import build_model
    from makemore.optimizers import build_optimizer, family_of
    from makemore.optimizers.stacked import StackedOptimizer
    from makemore.stacked import StackedMLP

    models = [build_model(cfg.model, vocab_size) for _ in range(members)]
    optimizers = [build_optimizer(m, cfg.optim, cfg.schedule, cfg.steps)[0] for m in models]
    engine = StackedMLP(models)
    optimizer = StackedOptimizer(engine, optimizers, models, family_of(cfg.optim))
    rows = torch.randint(0, len(X), (members, cfg.batch_size), generator=torch.Generator().manual_seed(0))
    x, y, rates, smoothing = X[rows], Y[rows], [(cfg.optim.lr, tuple(range(members)))], [0.0] * members

    def step() -> None:
        engine.step(x, y, smoothing)
        optimizer.step(rates)

    step_ms = repeated_ms(step, steps) / members
    activations = torch.rand(members, cfg.batch_size, cfg.model.hidden)
    return step_ms, repeated_ms(functools.partial(torch.tanh, activations), steps) / members / step_ms


def stacking_costs(smoke: bool) -> None:
    """Print what a member-step of the default MLP costs on one core at each population size."""
    from makemore.config import compose_train_config
    from makemore.data import make_dataset
    from makemore.preflight import prepare
    from makemore.stacked import torch_threads

    cfg, items, vocab = prepare(compose_train_config())
    data = make_dataset(items, vocab, cfg.model.block_size)  # read and cut once, for every size
    with torch_threads(1):
        costs = {
            k: stacked_step_ms(cfg, data.X["train"], data.Y["train"], vocab.size, k, 5 if smoke else 300)
            for k in (1, 4, 8, 16)
        }
    shown = ", ".join(f"{k} members {ms:.3f} ms" for k, (ms, _) in costs.items())
    print(
        f"the default MLP stacked, one core, per member-step: {shown}; torch.tanh alone "
        f"{costs[8][1]:.0%} of it at 8 members"
    )


def vmap_costs(smoke: bool) -> None:
    """Print what a member-step (forward and backward) of the default GRU and transformer costs on one core alone and
    stacked through torch.func.vmap, and whether the launcher's probe lets them stack on this machine."""
    from makemore.config import compose_train_config
    from makemore.models import build_model
    from makemore.preflight import prepare
    from makemore.stacked import VmappedModel, torch_threads, why_not_stacked
    from makemore.train import run_data

    with torch_threads(1):
        for name in ("gru", "transformer"):
            cfg, items, vocab = prepare(compose_train_config(f"model={name}"))
            models = []
            for seed in range(8):
                torch.manual_seed(seed)
                models.append(build_model(cfg.model, vocab.size))
            data = run_data(cfg, items, vocab, models[0], torch.device("cpu"), None)
            rows = torch.randint(0, len(data.Y["train"]), (8, data.rows_per_batch or cfg.batch_size))
            x, y = data.X["train"][rows], data.Y["train"][rows]
            items_ = y.dim() == 3
            costs = {1: solo_step_ms(models[0], x[0], y[0], 2 if smoke else 20)}
            for k in (4, 8):
                engine = VmappedModel(models[:k], items_)
                stacked_step = functools.partial(engine.step, x[:k], y[:k], [0.0] * k)
                costs[k] = repeated_ms(stacked_step, 2 if smoke else 20) / k
            reason = why_not_stacked(models[:3], [(x[k], y[k]) for k in range(3)], items_)
            shown = ", ".join(f"{k} stacked {ms:.2f} ms" for k, ms in costs.items() if k > 1)
            print(
                f"the default {name} through vmap, one core, per member-step: alone {costs[1]:.2f} ms, {shown}; "
                f"the probe: {reason or 'stacks, each member equal to its solo run'}"
            )


def solo_step_ms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """One model's forward and backward on one batch, as its solo run takes them."""
    from makemore.models.scoring import predict

    def step() -> None:
        model.zero_grad()
        logits, targets = predict(model, x, y)
        F.cross_entropy(logits, targets, ignore_index=-1).backward()

    return repeated_ms(step, steps)


def repeated_ms(step, steps: int) -> float:
    """Milliseconds a call of `step` takes, after three to warm up."""
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3


def population_speed(seeds: int, smoke: bool, lecture_steps: int | None) -> None:
    """Print member-steps/s of each recipe through each launcher, measured one after the other in this command;
    `lecture_steps`: the steps of lecture 2's recipe (None: its own 200k)."""
    recipes = list(POPULATION_RECIPES.items())[:1] if smoke else POPULATION_RECIPES.items()
    for recipe, overrides in recipes:
        steps = 100 if smoke else lecture_steps if "karpathy_mlp" in recipe else None
        overrides = [*overrides, f"steps={steps}"] if steps else overrides
        recipe = f"{recipe} steps={steps}" if steps else recipe
        speed = {name: member_steps_per_second(overrides, launcher, seeds) for name, launcher in LAUNCHERS.items()}
        shown = ", ".join(f"{name} {value:,.0f}" for name, value in speed.items())
        basic, joblib = (speed["population"] / speed[name] for name in ("basic launcher", "joblib, 2 jobs"))
        print(
            f"{recipe} (member-steps/s of the whole command): {shown}; population {basic:.2f}x the basic "
            f"launcher, {joblib:.2f}x joblib"
        )


def run_seconds(cwd: Path) -> float:
    """Wall time of `python train.py steps=10` in `cwd`: its start, ten steps, its evaluation and its outputs, the
    dashboard refresh at its end included."""
    begin = time.perf_counter()
    made = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "steps=10", "progress=false", "samples=0"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if made.returncode:
        raise SystemExit(made.stderr)
    return time.perf_counter() - begin


def dashboard_cost(kept: int) -> None:
    """Print a short run's wall time with an empty outputs/ and with `kept` runs there (copies of a real run's
    record), the first time (every run read, the view's index written) and after (the index read)."""
    with tempfile.TemporaryDirectory() as user:
        cwd, outputs = Path(user), Path(user) / "outputs"
        empty = run_seconds(cwd)
        [run] = find_runs(outputs)
        for i in range(kept):  # what the view reads of a run: its config, overrides, metrics, history
            shutil.copytree(run, outputs / "kept" / str(i), ignore=lambda _, names: [n for n in names if ".pt" in n])
        (outputs / "dashboard.jsonl").unlink()
        first, after = run_seconds(cwd), run_seconds(cwd)
    print(
        f"a run's wall time (python train.py steps=10): {empty:.2f} s with an empty outputs/; with {kept:,} runs "
        f"kept there {first:.2f} s the first time (every run read, the view's index written), then {after:.2f} s "
        f"(the index read): {after - empty:+.2f} s (goal <= 1)"
    )


def optuna_search(pruner: str, trials: int, *overrides: str) -> dict:
    """`python sweep.py sweep=optuna_mlp` (TPE, sampler seed 42) with a pruner: its members' training seconds,
    its wall time, its best dev and the share of its runs pruned."""
    wall, members = timed_sweep(
        "sweep.py", "sweep=optuna_mlp", f"hydra/sweeper/pruner={pruner}", f"hydra.sweeper.n_trials={trials}", *overrides
    )
    devs = [m["dev_loss"] for m in members if m["status"] == "ok"]
    return {
        "train_seconds": sum(m["train_seconds"] for m in members),
        "wall": wall,
        "best": min(devs),
        "pruned": sum(m["status"].startswith("pruned") for m in members) / len(members),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m makemore.experiments.bench", description=__doc__)
    parser.add_argument("--steps", type=int, default=2000, help="steps per throughput measurement")
    parser.add_argument("--repeats", type=int, default=7, help="alternating measurements of each loop")
    parser.add_argument("--parallel", action="store_true", help="only: time a 4-member sweep, joblib vs basic")
    parser.add_argument("--quick", action="store_true", help="skip (e), lecture 2's two 200k-step runs")
    parser.add_argument(
        "--pruning",
        default=None,
        metavar="PRUNER",
        help="only compare sweep=optuna_mlp without and with this pruner (median, successive_halving, "
        "hyperband) at equal trial counts",
    )
    parser.add_argument("--trials", type=int, default=20, help="trials per search for --pruning")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="--pruning: each trial a seed group of N runs (seeds=N), judged on their mean",
    )
    parser.add_argument(
        "--launcher",
        default=None,
        metavar="NAME",
        help="--pruning: the searches' hydra/launcher (population: each trial's seeds trained as one population)",
    )
    parser.add_argument(
        "--population",
        action="store_true",
        help="only: 16-member sweeps through the basic launcher, joblib with 2 jobs and hydra/launcher=population; "
        "then a stacked member-step's cost on one core (the MLP by hand, the GRU and transformer through vmap)",
    )
    parser.add_argument(
        "--lecture-steps",
        type=int,
        default=None,
        metavar="N",
        help="steps of lecture 2's recipe in --population (default: its own 200,000)",
    )
    parser.add_argument(
        "--dashboard",
        type=int,
        default=None,
        metavar="N",
        help="only: a short run's wall time with an empty outputs/ and with N runs kept there",
    )
    parser.add_argument(
        "--startup",
        action="store_true",
        help="only: where the default run's and 16- and 256-member population sweeps' time goes, phase by phase",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every measurement at a token size: checks that the benchmark runs end to end; its figures mean nothing",
    )
    args = parser.parse_args(argv)
    runs = ["steps=100"] if args.smoke else []  # the runs' own step counts, unless a smoke test shrinks them
    if args.smoke:
        args.steps, args.repeats, args.trials = 50, 1, 2
    if args.startup:
        startup(args.smoke)
        return 0
    if args.dashboard is not None:
        dashboard_cost(10 if args.smoke else args.dashboard)
        return 0
    if args.population:
        population_speed(2 if args.smoke else 16, args.smoke, args.lecture_steps)
        stacking_costs(args.smoke)
        vmap_costs(args.smoke)
        return 0
    if args.parallel:
        members = {"steps": 100} if args.smoke else {}
        basic = sweep_seconds(**members)
        joblib = sweep_seconds("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", **members)
        print(
            f"sweep of 4 members: basic launcher (one after another) {basic:.1f} s, "
            f"joblib with 2 jobs {joblib:.1f} s, speed-up {basic / joblib:.2f}x"
        )
        return 0
    if args.pruning:
        search = [*runs, *([f"seeds={args.seeds}"] if args.seeds else [])]
        search += [f"hydra/launcher={args.launcher}"] if args.launcher else []
        full, pruned = optuna_search("none", args.trials, *search), optuna_search(args.pruning, args.trials, *search)
        shown, unit = " ".join(["sweep=optuna_mlp", *search[len(runs) :]]), "runs" if args.seeds else "trials"
        for name, searched in (("no pruner", full), (args.pruning, pruned)):
            print(
                f"{shown}, {args.trials} trials, {name}: {searched['train_seconds']:.1f} s of training "
                f"({searched['wall']:.1f} s wall), best dev {searched['best']:.4f}, {searched['pruned']:.0%} of "
                f"{unit} pruned"
            )
        print(
            f"pruning with {args.pruning}: {full['train_seconds'] / pruned['train_seconds']:.2f}x less training time "
            f"(goal >= 2.5 at 50 trials), best dev {pruned['best'] - full['best']:+.4f} against the unpruned search "
            "(goal <= +0.01)"
        )
        return 0

    speed = throughput(args.steps, args.repeats)
    print(
        f"(a) throughput, MLP 11,897 params, batch 32, 1 thread: framework (autograd) {speed['framework']:,.0f} "
        f"steps/s, hand loop {speed['hand']:,.0f} steps/s, ratio {speed['ratio']:.2f}"
    )
    print(
        f"    autograd's forward+backward alone: {speed['kernels']:,.0f} steps/s, so no loop that runs autograd "
        f"can exceed a ratio of {speed['ceiling']:.2f} on this machine"
    )
    print(
        f"    model.backward=manual (hand-derived backward, fused SGD): {speed['manual']:,.0f} steps/s, ratio "
        f"{speed['manual_ratio']:.2f} to the hand loop (goal >= 1.5), {speed['manual_over_autograd']:.2f}x "
        f"autograd's framework loop; at batch 256: ratio {speed['manual_ratio_256']:.2f} "
        f"({speed['manual_256']:,.0f} against {speed['hand_256']:,.0f} steps/s)"
    )
    metrics = default_run(*runs)
    if "seconds_to_target" in metrics:
        print(
            f"(b) time to dev < {metrics['target']} with `python train.py`: {metrics['seconds_to_target']:.2f} s of "
            f"training (goal <= 3), {metrics['process_seconds_to_target']:.2f} s of the whole process (goal <= 10), "
            f"at step {metrics['step_to_target']:,}; final dev {metrics['dev_loss']:.4f}"
        )
    else:
        print(f"(b) `python train.py` never reached dev < {metrics['target']} (final dev {metrics['dev_loss']:.4f})")
    print(
        f"(c) evaluation share: {metrics['eval_seconds'] / metrics['train_seconds']:.1%} of "
        f"{metrics['train_seconds']:.2f} s of training"
    )
    print(f"(d) peak memory of `python train.py`: {metrics['peak_rss_mb']:,.0f} MB resident")
    if not args.quick:
        auto, manual = lecture_run_seconds(*runs), lecture_run_seconds("model.backward=manual", *runs)
        print(
            f"(e) experiment=karpathy_mlp, 200k steps of training: autograd {auto['seconds']:.1f} s (dev "
            f"{auto['dev']:.4f}), model.backward=manual {manual['seconds']:.1f} s (dev {manual['dev']:.4f}), "
            f"{auto['seconds'] / manual['seconds']:.2f}x faster"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
