"""The README executes: every `python train.py`, `python sweep.py` and `python -m makemore...` command in the code
blocks of README.md and docs/*.md runs here as written, from a fresh copy of the project's default directories,
with at most a cheap-mode suffix (`steps=`, `hydra.sweeper.n_trials=`, the benchmark's `--smoke`). A command
with no case fails the suite; so does a figure shown there that the code no longer gives."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from makemore.models import OPTIONS
from makemore.report import logged_hparams, pareto_points, read_run, significant
from makemore.rundir import find_runs, read_overrides

from helpers import ROOT, interrupted_once, read_metrics, run_bash, served_trials, tree_hashes
from wandb_records import read_run as read_wandb_run

# The README and the documents it links to, read as one text: a command or figure is checked wherever it is shown.
README = "\n\n".join(
    path.read_text(encoding="utf-8") for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
)
COMMAND = re.compile(r"^ {4,}((?:PYTHONPATH=\S+ )?python (?:train\.py|sweep\.py|-m makemore)\S*.*?)(?:\s+# .*)?$")
QUICK = "steps=20 progress=false"


def readme_commands() -> list[str]:
    """Every command of the README's and the docs' code blocks (indented four spaces), its comment cut off, once."""
    found = [m.group(1).strip() for line in README.splitlines() if (m := COMMAND.match(line))]
    return list(dict.fromkeys(found))


def code_block_of(command: str) -> str:
    """The whole code block that holds `command` (the lines indented four spaces around it), dedented."""
    lines = README.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(command))
    start, end = at, at
    while start > 0 and (lines[start - 1].startswith("    ") or not lines[start - 1].strip()):
        start -= 1
    while end + 1 < len(lines) and (lines[end + 1].startswith("    ") or not lines[end + 1].strip()):
        end += 1
    return "\n".join(line[4:] for line in lines[start : end + 1]).strip() + "\n"


def bash(project: Path, command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_bash(command, project, timeout=timeout)


def runs_under(project: Path) -> list[Path]:
    outputs = project / "outputs"
    return find_runs(outputs) if outputs.is_dir() else []


def sweep_roots(project: Path) -> list[Path]:
    return sorted(p.parent for p in (project / "outputs").rglob("multirun.yaml"))


def a_run(project: Path, *overrides: str) -> Path:
    """A finished run made by `python train.py` in the project, for the commands that take `outputs/<run>`."""
    before = set(runs_under(project))
    made = bash(project, " ".join(["python train.py", QUICK, *overrides]))
    assert made.returncode == 0, made.stderr[-2000:]
    [run] = set(runs_under(project)) - before
    return run


def an_interrupted_run(project: Path) -> Path:
    """A run stopped by Ctrl-C after its first checkpoint, for `resume=outputs/<run>`."""
    args = ["train.py", "steps=3000", "checkpoint_interval=100", "progress=false", "logger=none"]
    interrupted_once(args, project, lambda: bool(list((project / "outputs").rglob("checkpoint.pt"))))
    [run] = runs_under(project)
    return run


@dataclass
class Case:
    """How a README command runs here: its cheap-mode suffix, what it needs first, and what it promises."""

    suffix: str = QUICK
    check: Callable[[Path, subprocess.CompletedProcess], None] | None = None
    setup: Callable[[Path], dict[str, str]] | None = None  # placeholders (`<run>`, `<sweep>`) to fill in
    block: bool = False  # run the whole code block (its setup lines with it), the suffix on this command
    compose_only: str = ""  # why the command can only be composed here, not run


def one_ok_run(project: Path, result: subprocess.CompletedProcess) -> dict:
    [run] = runs_under(project)
    metrics = read_metrics(run)
    assert metrics["status"] == "ok"
    assert all((run / name).is_file() for name in (".hydra/config.yaml", "model.pt", "history.csv", "samples.txt"))
    return metrics


def default_run(project: Path, result: subprocess.CompletedProcess) -> None:
    """The README's first command: dev ~2.13, and dev evaluated every 150 steps, 20 points with the final one."""
    metrics = one_ok_run(project, result)
    [run] = runs_under(project)
    [setup] = [p for p in README.split("\n\n") if p.startswith("Set up a fresh machine and train the default model")]
    assert f"dev ~{metrics['dev_loss']:.2f}" in setup
    with open(run / "history.csv", newline="") as f:
        evaluated = [int(row["step"]) for row in csv.DictReader(f) if row["loss/dev"]]
    assert evaluated == list(range(150, 3001, 150))
    assert "Dev is evaluated every 150 steps on the full dev split, 20 points over the default" in " ".join(
        README.split()
    )
    assert list(run.glob("events.out.tfevents.*")) and (project / "outputs" / "target 2.2").is_dir()


def one_sweep(*, status: str = "ok") -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(project: Path, result: subprocess.CompletedProcess) -> None:
        [sweep_dir] = sweep_roots(project)
        members = [d for d in find_runs(sweep_dir) if (d / "metrics.json").is_file()]
        with open(sweep_dir / "leaderboard.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(members) >= 2  # one row per member
        assert all(row["status"].startswith(status) or row["status"] == "ok" for row in rows)
        assert (sweep_dir / "leaderboard.md").is_file() and (sweep_dir / "leaderboard.png").is_file()

    return check


def sweep_of(count: int, *, status: str = "ok") -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(project: Path, result: subprocess.CompletedProcess) -> None:
        one_sweep(status=status)(project, result)
        [sweep_dir] = sweep_roots(project)
        assert len([d for d in find_runs(sweep_dir) if (d / "metrics.json").is_file()]) == count

    return check


def same_losses_as_the_source(project: Path, result: subprocess.CompletedProcess) -> None:
    source, rerun = sorted(runs_under(project), key=lambda run: (run / "metrics.json").stat().st_mtime)[-2:]
    losses = [{k: read_metrics(r)[k] for k in ("train_loss", "dev_loss", "test_loss")} for r in (source, rerun)]
    assert losses[0] == losses[1]


def same_losses_as_the_member(project: Path, result: subprocess.CompletedProcess) -> None:
    [sweep_dir] = sweep_roots(project)
    [rerun] = [run for run in runs_under(project) if sweep_dir not in run.parents]
    member = sweep_dir / "mlp s43"
    assert [read_metrics(run)["dev_loss"] for run in (member, rerun)] == [read_metrics(member)["dev_loss"]] * 2


def sample_check(project: Path, result: subprocess.CompletedProcess) -> None:
    printed = result.stdout.splitlines()
    assert len(printed) == 50 and all(line.startswith("em") for line in printed)
    assert (project / "samples.txt").read_text(encoding="utf-8").splitlines() == printed
    assert re.match(r"50 samples: \d+% new, \d+% in train, \d+% in dev/test only", result.stderr.splitlines()[-1])


def evaluated(project: Path, result: subprocess.CompletedProcess, split: str) -> dict:
    """The one evaluation a command printed and recorded, for the one run under outputs/, which it left as it was."""
    [run] = runs_under(project)
    [record] = (project / "outputs" / "evaluations").glob("*/evaluation.json")
    [score] = json.loads(record.read_text())["evaluations"]
    assert result.stderr.endswith(f"record: {record.relative_to(project)}\n")
    assert score["run"] == str(run.relative_to(project)) and json.loads(record.read_text())["data"]["split"] == split
    return score


def evaluated_dev(project: Path, result: subprocess.CompletedProcess) -> None:
    score = evaluated(project, result, "dev")
    [run] = runs_under(project)
    assert score["loss"] == read_metrics(run)["dev_loss"]
    assert f": {score['loss']:.4f} nats/char, {score['bits_per_character']:.4f} bits/char on the dev split" in (
        result.stdout
    )


def evaluated_pokemon(project: Path, result: subprocess.CompletedProcess) -> None:
    score = evaluated(project, result, "all")
    assert (score["items"], score["skipped_items"], score["unseen"]) == (2, 1, " .")
    assert "on pokemon.txt (2 items, 18 characters; 1 skipped for ' .')" in result.stdout


def pokemon_file(project: Path) -> dict[str, str]:
    """The README's pokemon.txt, written by its own printf line, and a finished run to score on it."""
    [printf] = [line.strip() for line in README.splitlines() if line.strip().startswith("printf ")]
    assert bash(project, printf).returncode == 0
    return finished_run(project)


def report_with_eval_check(project: Path, result: subprocess.CompletedProcess) -> None:
    report_check(project, result)
    [run] = runs_under(project)
    [score] = json.loads(next((project / "outputs" / "evaluations").glob("*/evaluation.json")).read_text())[
        "evaluations"
    ]
    with open(project / "outputs" / "leaderboard.csv", newline="") as f:
        [row] = csv.DictReader(f)
    assert row["pokemon.txt loss"] == f"{score['loss']:.4f}" and score["items"] == 2
    assert f"{run.relative_to(project)}: 1 of 3 items of pokemon.txt skipped for ' .'" in result.stdout


def dashboard_bench_check(project: Path, result: subprocess.CompletedProcess) -> None:
    assert re.fullmatch(
        r"a run's wall time \(python train.py steps=10\): [\d.]+ s with an empty outputs/; with 10 runs kept there "
        r"[\d.]+ s the first time \(every run read, the view's index written\), then [\d.]+ s \(the index read\): "
        r"[+-][\d.]+ s \(goal <= 1\)\n",
        result.stdout,
    )


def report_check(project: Path, result: subprocess.CompletedProcess) -> None:
    assert "leaderboard of 1 runs in outputs" in result.stdout
    assert (project / "outputs" / "leaderboard.md").is_file()


def resumed_check(project: Path, result: subprocess.CompletedProcess) -> None:
    metrics = one_ok_run(project, result)
    assert metrics["steps"] == 3000


def lr_finder_check(project: Path, result: subprocess.CompletedProcess) -> None:
    [sweep_dir] = sweep_roots(project)
    assert (sweep_dir / "lr_finder.png").is_file() and "lr finder: suggested lr" in result.stdout


def only_study(project: Path):
    """The one Optuna study of the one sweep under outputs/, and its sweep directory."""
    import optuna

    from makemore.search import open_storage

    [sweep_dir] = sweep_roots(project)
    storage = open_storage(str(sweep_dir / "optuna_journal.log"))
    [summary] = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage), sweep_dir


def trial_of(run_dir: Path) -> int:
    """The Optuna trial a sweep member ran for, from its trial= override."""
    return next(int(o.split("=")[1]) for o in read_overrides(run_dir) if o.startswith("trial="))


def two_processes_share_one_study(project: Path, result: subprocess.CompletedProcess) -> None:
    members = [d for d in find_runs(project / "outputs" / "search") if (d / "metrics.json").is_file()]
    trials = sorted(map(trial_of, members))
    assert trials == list(range(len(trials))) and len(trials) >= 4  # each trial run once, none twice


def database(project: Path) -> dict[str, str]:
    """A real PostgreSQL server (pgserver's build) for the study: its URL, quoted for Hydra inside bash's quotes as
    docs/search.md says, and kept in database.url for the check."""
    import tempfile

    pgserver = pytest.importorskip("pgserver", reason="pgserver (the dev extra) starts the PostgreSQL server")
    try:  # its socket lives in its data directory, whose path must stay short
        server = pgserver.get_server(tempfile.mkdtemp(prefix="pg"), cleanup_mode="stop")
    except Exception as e:
        pytest.skip(f"no PostgreSQL server can be started here: {e}")
    (project / "database.url").write_text(server.get_uri())
    return {"<database>": f"'\"{server.get_uri()}\"'"}


def workers_share_one_database_study(project: Path, result: subprocess.CompletedProcess) -> None:
    """Two processes, one PostgreSQL study: n_trials finished trials, each run once, one leaderboard of them all."""
    import optuna

    two_processes_share_one_study(project, result)
    study = optuna.load_study(study_name="optuna_mlp", storage=(project / "database.url").read_text())
    finished = [t.number for t in study.trials if t.state.name == "COMPLETE"]
    members = [d for d in find_runs(project / "outputs" / "search") if (d / "metrics.json").is_file()]
    ran = sorted(map(trial_of, members))
    assert len(finished) == 4 and ran == finished
    with open(project / "outputs" / "search" / "leaderboard.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


def parallel_sweep_of(count: int) -> Callable[[Path, subprocess.CompletedProcess], None]:
    """A parallel launcher's sweep from the default directories: one sweep directory (not one per worker), the
    constant overrides left out of the members' names, and a member's printed rerun command works when pasted."""

    def check(project: Path, result: subprocess.CompletedProcess) -> None:
        sweep_of(count)(project, result)
        [sweep_dir] = sweep_roots(project)
        assert not any("steps" in run.name for run in find_runs(sweep_dir))
        with open(sweep_dir / "leaderboard.csv", newline="") as f:
            first = next(csv.DictReader(f))
        rerun = bash(project, f"{first['rerun']} progress=false")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert f"dev {float(first['dev']):.4f}" in rerun.stdout

    return check


def seeds_check(count: int) -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(project: Path, result: subprocess.CompletedProcess) -> None:
        sweep_of(count)(project, result)
        [sweep_dir] = sweep_roots(project)
        assert (sweep_dir / "leaderboard_groups.csv").is_file()

    return check


def bench_check(project: Path, result: subprocess.CompletedProcess) -> None:
    printed = ("ratio", "pruning with", "x the basic launcher", "speed-up")  # one of each mode's figures
    assert any(figure in result.stdout for figure in printed)


def population_bench_check(project: Path, result: subprocess.CompletedProcess) -> None:
    bench_check(project, result)
    assert re.search(
        r"the default MLP stacked, one core, per member-step: 1 members [\d.]+ ms, 4 members [\d.]+ ms, 8 members "
        r"[\d.]+ ms, 16 members [\d.]+ ms; torch.tanh alone \d+% of it at 8 members",
        result.stdout,
    )


def startup_bench_check(project: Path, result: subprocess.CompletedProcess) -> None:
    """Each command's phases in the order they ended, then what the goals are measured by."""
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"the default run \(python train.py\): [\d.]+ s; imported [\d.]+, composed [\d.]+, .*, exit [\d.]+", lines[0]
    )
    assert re.fullmatch(r"    [\d.]+ s of training \+ [\d.]+ s of the rest \(goal: the rest <= 2.5 s\)", lines[1])
    for seeds, line in zip((2, 4), lines[3::2]):
        assert (
            line.startswith(f"    {seeds} members; the first step ")
            and "members composed" in lines[lines.index(line) - 1]
        )


def one_population_of(count: int) -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(project: Path, result: subprocess.CompletedProcess) -> None:
        seeds_check(count)(project, result)
        assert f"population 1 of 1: {count} members stacked (differing in seed;" in result.stdout
        [sweep_dir] = sweep_roots(project)
        records = [json.loads((d / ".hydra" / "population.json").read_text()) for d in find_runs(sweep_dir)]
        assert sorted(r["index"] for r in records) == list(range(count)) and {r["size"] for r in records} == {count}

    return check


def each_optimizer_a_population_its_members_solo_runs(project: Path, result: subprocess.CompletedProcess) -> None:
    """AdamW's four seeds and Lion's train as two populations; a Lion member's printed rerun reproduces it alone."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("population ")]
    stacked = "4 members stacked (differing in seed; apart from the others by optim.name; the MLP's gradients by hand"
    assert len(lines) == 2 and all(line.split(": ")[1].startswith(stacked) for line in lines), lines
    [sweep_dir] = sweep_roots(project)
    with open(sweep_dir / "leaderboard.csv", newline="") as f:
        reruns = [row["rerun"] for row in csv.DictReader(f) if row["run"].startswith("lion ")]
    assert len(reruns) == 4
    again = bash(project, reruns[-1])
    assert "rerun verdict: reproduced: losses identical" in again.stdout, again.stdout[-1000:] + again.stderr[-1000:]


def the_basic_launchers_numbers(project: Path, result: subprocess.CompletedProcess) -> None:
    """Two populations of 4; the same 8 members, bit for bit, and the same leaderboard as the basic launcher's;
    a member's printed rerun command reproduces it alone."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("population ")]
    assert [line.split(":")[0] for line in lines] == ["population 1 of 2", "population 2 of 2"]
    assert all("4 members stacked (differing in optim.lr, seed; apart from the others by model.emb" in x for x in lines)
    [population] = sweep_roots(project)
    command = result.args[2].replace("hydra/launcher=population ", "")  # the same command, the basic launcher
    basic = bash(project, f"{command} hydra.sweep.dir=outputs/basic")
    assert basic.returncode == 0, basic.stderr[-2000:]
    members = find_runs(project / "outputs" / "basic")
    assert len(members) == 8
    timings = ("train_seconds", "eval_seconds", "steps_per_second", "seconds_to_target", "target_reached_at")
    for member in members:
        mine, theirs = read_metrics(population / member.name), read_metrics(member)
        assert {k: v for k, v in mine.items() if k not in timings} == {
            k: v for k, v in theirs.items() if k not in timings
        }
        assert (population / member.name / "history.csv").read_text() == (member / "history.csv").read_text()
    for name in ("leaderboard.csv", "leaderboard_groups.csv"):  # the same rows, but for the timings and paths
        with open(population / name, newline="") as f, open(project / "outputs" / "basic" / name, newline="") as g:
            ours, theirs = (
                [{k: v for k, v in r.items() if k not in ("seconds", "rerun")} for r in csv.DictReader(h)]
                for h in (f, g)
            )
            assert ours == theirs and len(ours) == 8  # 8 members; 4 seed groups, each followed by its ensemble
    with open(population / "leaderboard.csv", newline="") as f:
        rerun = next(csv.DictReader(f))["rerun"]
    again = bash(project, rerun)
    assert "rerun verdict: reproduced" in again.stdout, again.stdout[-1000:] + again.stderr[-1000:]


def trials_pruned_one_by_one(project: Path, result: subprocess.CompletedProcess) -> None:
    """Optuna's trials in populations of 4: some pruned on their own while the rest of their population finished,
    and the study holds what each trial's run logged."""
    study, sweep_dir = only_study(project)
    assert result.stdout.count("4 members stacked") == 2
    trials = study.trials
    by_number = {trial_of(run_dir): read_metrics(run_dir) for run_dir in find_runs(sweep_dir)}
    states = {t.number: t.state.name for t in trials}
    assert "PRUNED" in states.values() and "COMPLETE" in [states[t.number] for t in trials[4:]]
    for trial in trials:
        metrics = by_number[trial.number]
        if trial.state.name == "COMPLETE":
            assert metrics["status"] == "ok" and trial.value == metrics["dev_loss"]
        else:
            assert metrics["status"] == f"pruned at step {trial.last_step}"
            assert trial.intermediate_values[trial.last_step] == metrics["dev_loss_at_prune"]


def pruned_seed_groups_in_populations(project: Path, result: subprocess.CompletedProcess) -> None:
    """Each trial's four seeds trained as one population, each with the weights' moving average, whose dev loss is
    what it reported; a pruned trial stopped all four at the step it was pruned, a kept one trained all four."""
    study, sweep_dir = only_study(project)
    assert result.stdout.count("population 1 of 1: 4 members stacked (differing in seed;") == len(study.trials)
    members: dict[int, list[Path]] = {}
    for run_dir in find_runs(sweep_dir):
        members.setdefault(trial_of(run_dir), []).append(run_dir)
    assert "PRUNED" in {t.state.name for t in study.trials} and "COMPLETE" in {t.state.name for t in study.trials}
    for trial in study.trials:
        assert len(members[trial.number]) == 4
        pruned = trial.user_attrs.get("pruned_at_step")
        statuses = {read_metrics(run_dir)["status"] for run_dir in members[trial.number]}
        assert statuses == ({f"pruned at step {pruned}"} if trial.state.name == "PRUNED" else {"ok"})
        for run_dir in members[trial.number]:
            assert "ema_decay=0.98" in read_overrides(run_dir)
            seed = next(o.split("=")[1] for o in read_overrides(run_dir) if o.startswith("seed="))
            reported = {int(k.split()[1]): v for k, v in trial.user_attrs.items() if k.endswith(f" seed={seed}")}
            if pruned is None:  # every report was its weights' average's dev loss
                with open(run_dir / "history.csv", newline="") as f:
                    averaged = {
                        int(r["step"]): float(r["loss/dev_ema"]) for r in csv.DictReader(f) if r["loss/dev_ema"]
                    }
                assert reported and reported == {step: averaged[step] for step in reported}
            elif pruned in reported:  # the seed whose report pruned the trial; its siblings stopped unreported
                assert reported[pruned] == read_metrics(run_dir)["dev_loss_at_prune"]


def trials_over_seeds(project: Path, result: subprocess.CompletedProcess) -> None:
    """4 trials x 3 seeds: no trial searches the seed, each trial's value is its seeds' mean dev loss (their spread
    beside it), and the printed optuna-dashboard command serves the study over HTTP."""
    import statistics

    from makemore.search import SEED_STD, SEED_VALUES

    study, sweep_dir = only_study(project)
    runs = find_runs(sweep_dir)
    assert len(study.trials) == 4 and len(runs) == 12
    for trial in study.trials:
        assert "seed" not in trial.params and trial.state.name == "COMPLETE"
        group = [run for run in runs if run.name.split()[0] == f"t{trial.number}"]
        assert sorted(run.name.split()[-1] for run in group) == ["s42", "s43", "s44"]
        devs = [read_metrics(run)["dev_loss"] for run in group]
        assert trial.value == statistics.fmean(trial.user_attrs[SEED_VALUES]) == pytest.approx(statistics.fmean(devs))
        assert trial.user_attrs[SEED_STD] == pytest.approx(statistics.stdev(devs))
    assert "leaderboard of 12 runs" in result.stdout and "3 of 3 ok" in result.stdout
    with open(sweep_dir / "leaderboard_groups.csv", newline="") as f:
        labels = {row["group"] for row in csv.DictReader(f) if row["rank"]}
    varying = sorted(k for k in study.trials[0].params if len({str(t.params[k]) for t in study.trials}) > 1)
    short = {"model.block_size": "bs"}  # a key's words by their initials
    assert labels == {  # each group by its trial and values at 4 significant digits: `t3 bs=4 emb=10 ...`
        " ".join(
            [
                f"t{t.number}",
                *(f"{short.get(k, k.rpartition('.')[2])}={significant(str(t.params[k]))}" for k in varying),
            ]
        )
        for t in study.trials
    }
    assert "optim.lr" in varying and max(map(len, labels)) < 40
    printed = result.stdout.split("the study in optuna-dashboard:\n")[1].splitlines()
    command = [line.strip() for line in printed if line.startswith("    ")][-1]
    assert command.startswith("optuna-dashboard ")
    served = served_trials(command, project)
    assert {t["number"]: t["values"] for t in served} == {t.number: [t.value] for t in study.trials}


def pareto_front_marked(project: Path, result: subprocess.CompletedProcess) -> None:
    """Dev loss against parameters: a front of at least two trials, none dominated by any finished trial, and the
    leaderboard's pareto column marks exactly their runs."""
    study, sweep_dir = only_study(project)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    front = study.best_trials
    assert len(study.directions) == 2 and len(front) >= 2
    for trial in front:
        assert not any(
            all(a <= b for a, b in zip(o.values, trial.values)) and o.values != trial.values for o in finished
        )
    with open(sweep_dir / "leaderboard.csv", newline="") as f:
        marked = {row["run"] for row in csv.DictReader(f) if row["pareto"] == "✓"}
    assert marked == {run.name for run in find_runs(sweep_dir) if trial_of(run) in {t.number for t in front}}
    drawn = pareto_points(sweep_dir)  # what leaderboard.png draws: dev loss against params, every finished trial
    assert (drawn.x, drawn.y) == ("params", "dev_loss")
    assert drawn.points == {f"t{t.number}": (t.values[1], t.values[0]) for t in finished}
    assert drawn.front == {f"t{t.number}" for t in front}


def fastest_to_the_target(project: Path, result: subprocess.CompletedProcess) -> None:
    """seconds_to_target: trials stop where they reach the target, metrics.json says so, and the best trial is the
    one with the least seconds (a trial that never reaches it: its seconds plus the penalty)."""
    study, sweep_dir = only_study(project)
    seconds = {}
    for run in find_runs(sweep_dir):
        metrics = read_metrics(run)
        if "seconds_to_target" in metrics:
            assert metrics["stopped_at_target"] == metrics["steps"] == metrics["step_to_target"] < 300
            seconds[trial_of(run)] = metrics["seconds_to_target"]
        else:
            seconds[trial_of(run)] = metrics["train_seconds"] + 10000.0
    assert any(value < 10000 for value in seconds.values())
    assert {t.number: t.value for t in study.trials} == seconds
    assert study.best_trial.number == min(seconds, key=seconds.get)


def slots_refilled(project: Path, result: subprocess.CompletedProcess) -> None:
    """Two slots: a trial starts the moment a pruned one ends, while the other slot's trial is still running; each
    trial runs once."""
    study, sweep_dir = only_study(project)
    trials = study.trials
    assert sorted(trial_of(run) for run in find_runs(sweep_dir)) == [t.number for t in trials]
    refilled = [
        (pruned.number, next_.number, other.number)
        for pruned in trials
        if pruned.state.name == "PRUNED"
        for next_ in trials
        for other in trials
        if other.datetime_start < pruned.datetime_complete <= next_.datetime_start < other.datetime_complete
    ]
    assert refilled, [(t.number, t.state.name, t.datetime_start, t.datetime_complete) for t in trials]


def search_with_importances(project: Path, result: subprocess.CompletedProcess) -> None:
    """5 trials: the leaderboard, and under it each searched parameter's importance, as the study computes it."""
    from hydra_plugins.makemore_optuna.optuna_sweeper import param_importances

    sweep_of(5)(project, result)
    study, sweep_dir = only_study(project)
    importances = param_importances(study)
    assert set(importances) == {"model.emb", "model.hidden", "model.block_size", "optim.lr"}
    shares = ", ".join(f"{key} {share:.2f}" for key, share in importances.items())
    assert (
        f"parameter importances (Optuna's PED-ANOVA, normalised to sum to 1): {shares}"
        in (sweep_dir / "leaderboard.md").read_text()
    )


def best_trials_confirmed(project: Path, result: subprocess.CompletedProcess) -> None:
    """The best 2 trials, each on its own seed and 3 more, as seed groups of 4 with the verdict on their lead."""
    study, sweep_dir = only_study(project)
    best = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)[:2]
    with open(sweep_dir / "leaderboard_groups.csv", newline="") as f:
        groups = [row for row in csv.DictReader(f) if row["rank"]]
    assert [(row["n"], row["seeds"]) for row in groups[:2]] == [("4", "42 43 44 45")] * 2
    for row, trial in zip(groups, best):  # the trial's runs and its confirming ones, labelled by the trial
        assert row["group"].startswith(f"t{trial.number} ")
        shown = row["group"].replace("bs=", "block_size=")  # a key's words by their initials
        assert all(f"{k.rpartition('.')[2]}={significant(str(v))}" in shown for k, v in trial.params.items())
    assert "seed-to-seed spread" in result.stdout


def two_seeds(project: Path) -> dict[str, str]:
    """Two finished runs of one config under seeds 1 and 2."""
    a, b = (a_run(project, f"seed={seed}").relative_to(project) for seed in (1, 2))
    return {"outputs/<run-a>": str(a), "outputs/<run-b>": str(b)}


def six_seeds_averaged(project: Path, result: subprocess.CompletedProcess) -> None:
    """The record's sweep: six transformers, and under their group's row the ensemble the README quotes."""
    [sweep_dir] = sweep_roots(project)
    with open(sweep_dir / "leaderboard_groups.csv", newline="", encoding="utf-8") as f:
        group, ensemble = csv.DictReader(f)
    assert group["seeds"] == "42 43 44 45 46 47" and group["status"] == "6 of 6 ok"
    assert ensemble["group"] == "all: ensemble of 6" and float(ensemble["dev mean"]) < float(group["dev mean"])
    assert {read_metrics(run)["params"] for run in find_runs(sweep_dir)} == {204544}


def three_families(project: Path) -> dict[str, str]:
    """Three finished runs of different families, from one process: an MLP, a GRU on whole names and a WaveNet."""
    made = bash(project, f"python train.py -m model=mlp,gru,wavenet {QUICK} logger=none")
    assert made.returncode == 0, made.stderr[-2000:]
    [sweep_dir] = sweep_roots(project)
    runs = (sweep_dir / model for model in ("mlp", "gru", "wavenet"))
    return {f"outputs/<run-{letter}>": str(run.relative_to(project)) for letter, run in zip("abc", runs)}


def ensemble_check(project: Path, result: subprocess.CompletedProcess) -> None:
    """The record of the three runs' mixture, and the rescore command it prints works as printed."""
    [record] = (project / "outputs" / "ensembles").glob("*/ensemble.json")
    saved = json.loads(record.read_text())
    assert [run["model"] for run in saved["runs"]] == ["mlp", "gru", "wavenet"] and saved["weighting"] == "equal"
    [command] = [line.split("rescore it with: ")[1] for line in result.stdout.splitlines() if "rescore it with" in line]
    rescored = bash(project, command)
    assert rescored.returncode == 0 and "rescore verdict: reproduced" in rescored.stdout, rescored.stderr[-2000:]
    directory = record.parent.relative_to(project)
    rerun = bash(project, f"python train.py rerun={directory}")  # a record is no run: rerun= points at --rescore
    assert rerun.returncode == 1 and rerun.stderr.strip() == (
        f"error: {directory} is an ensemble's record, not a run; score it again with {command}"
    )


def best_three_ensembled(project: Path, result: subprocess.CompletedProcess) -> None:
    """The sweep's leaderboard ranks the mixture of its three runs beside them, with its rescore command."""
    [sweep_dir] = sweep_roots(project)
    [record] = (sweep_dir / "ensembles").glob("*/ensemble.json")
    saved = json.loads(record.read_text())
    members = [str(run.resolve()) for run in find_runs(sweep_dir) if run.parent != sweep_dir / "ensembles"]
    assert sorted(run["dir"] for run in saved["runs"]) == sorted(members) and len(members) == 3
    with open(sweep_dir / "leaderboard.csv", newline="", encoding="utf-8") as f:
        [row] = [row for row in csv.DictReader(f) if row["model"] == "ensemble"]
    assert row["dev"] == f"{saved['losses']['dev']:.4f}" and row["rerun"].startswith("python -m makemore.ensemble")
    continued = bash(project, f"{result.args[-1]} hydra.sweep.dir={sweep_dir.relative_to(project)}")
    assert continued.returncode == 0, continued.stderr[-2000:]
    assert list((sweep_dir / "ensembles").glob("*/ensemble.json")) == [record]  # the same best three: one record


def diff_check(project: Path, result: subprocess.CompletedProcess) -> None:
    rows = [line.split(" | ")[:2] for line in result.stdout.splitlines() if line.startswith("| ")]
    config_keys = [key for section, key in rows if section == "| config"]
    assert config_keys == ["seed"] and ["| provenance", "environment.command"] in rows
    assert ["| metrics", "dev_loss"] in rows


def device_table_check(project: Path, result: subprocess.CompletedProcess) -> None:
    assert result.stdout.startswith("device=auto picks ")
    rows = [line for line in result.stdout.splitlines() if line.startswith("| `python train.py")]
    assert [row.split("`")[1] for row in rows] == [
        "python train.py device=auto",
        "python train.py experiment=karpathy_mlp device=auto",
        "python train.py experiment=best device=auto",
    ]


def user_model_check(project: Path, result: subprocess.CompletedProcess) -> None:
    metrics = one_ok_run(project, result)
    assert metrics["params"] == 27 * 27  # LastCharacter: one V x V embedding


def wandb_check(project: Path, result: subprocess.CompletedProcess) -> None:
    one_ok_run(project, result)
    [run] = runs_under(project)
    [log] = run.glob("wandb/offline-run-*/run-*.wandb")  # a real offline W&B run, its summary the final losses
    assert read_wandb_run(log)["summary"]["loss/dev"] == pytest.approx(read_metrics(run)["dev_loss"])


def mlflow_check(project: Path, result: subprocess.CompletedProcess) -> None:
    from mlflow.tracking import MlflowClient

    metrics = one_ok_run(project, result)
    [run_dir] = runs_under(project)
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'outputs' / 'mlflow.db'}")  # the default store
    [run] = client.search_runs([client.get_experiment_by_name("makemore").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.params["model.emb"] == "10" and run.data.params["optim.name"] == "adamw"
    logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss/train"))
    with open(run_dir / "history.csv") as f:
        history = [(int(row["step"]), float(row["loss/train"])) for row in csv.DictReader(f) if row["loss/train"]]
    assert logged[:-1] == history[:-1] and logged[-1] == (300, metrics["train_loss"])  # the last: the full split
    assert run.data.metrics["loss/dev"] == pytest.approx(metrics["dev_loss"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {".hydra", "metrics.json", "history.csv", "model.pt", "samples.md", "provenance.json"} <= artifacts
    copied = client.download_artifacts(run.info.run_id, "metrics.json", str(project / "downloaded"))
    assert json.loads(Path(copied).read_text()) == metrics
    assert (project / "outputs" / "mlflow-artifacts").is_dir() and not (project / "mlruns").exists()  # under outputs


def printed_logger_check(project: Path, result: subprocess.CompletedProcess) -> None:
    metrics = one_ok_run(project, result)
    [final] = [line for line in result.stdout.splitlines() if line.startswith("mine final ")]
    assert f"'loss/dev': {metrics['dev_loss']}" in final
    assert any(line.startswith("mine 20 {'lr': ") for line in result.stdout.splitlines())  # the last step's rate


def words_file(project: Path) -> dict[str, str]:
    names = (ROOT / "makemore" / "data" / "names.txt").read_text().split()[:3000]
    (project / "my_words.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return {}


def finished_run(project: Path) -> dict[str, str]:
    return {"outputs/<run>": str(a_run(project).relative_to(project))}


def interrupted_run(project: Path) -> dict[str, str]:
    return {"outputs/<run>": str(an_interrupted_run(project).relative_to(project))}


def a_sweep_with_a_seed_43_member(project: Path) -> dict[str, str]:
    made = bash(project, f"python train.py -m model=mlp,additive seed=42,43 {QUICK} logger=none")
    assert made.returncode == 0, made.stderr[-2000:]
    [sweep_dir] = sweep_roots(project)
    assert (sweep_dir / "mlp s43").is_dir()
    return {"<sweep>": str(sweep_dir.relative_to(project / "outputs" / "multirun"))}


SWEEP_FILES: dict[Path, dict[str, str]] = {}  # a sweep's files as its setup left them, by project


def a_sweep_of_three_families(project: Path) -> dict[str, str]:
    made = bash(project, f"python train.py -m model=bigram_count,mlp,rnn {QUICK}")
    assert made.returncode == 0, made.stderr[-2000:]
    [sweep_dir] = sweep_roots(project)
    SWEEP_FILES[project] = tree_hashes(sweep_dir)
    return {"<sweep>": str(sweep_dir.relative_to(project / "outputs" / "multirun"))}


def a_view_on_the_swept_keys(project: Path, result: subprocess.CompletedProcess) -> None:
    """The printed command's logdir links every member and holds one HParams summary, its own: the swept key
    first and marked (so ticked), then only keys every member has, so parallel coordinates draws them all."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    [sweep_dir] = sweep_roots(project)
    [command] = [line.strip() for line in result.stdout.splitlines() if line.startswith("    tensorboard ")]
    view = Path(shlex.split(command)[-1])
    assert view.is_dir() and not view.resolve().is_relative_to((project / "outputs").resolve())
    members = find_runs(sweep_dir)
    assert {(view / m.name).resolve() for m in members} <= {p.resolve() for p in view.iterdir()}
    summaries = []
    for events in view.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"tensors": 0})
        accumulator.Reload()
        if "_hparams_/experiment" in accumulator.Tags()["tensors"]:
            content = accumulator.SummaryMetadata("_hparams_/experiment").plugin_data.content
            summaries.append(plugin_data_pb2.HParamsPluginData.FromString(content).experiment)
    [experiment] = summaries
    columns = [info.name for info in experiment.hparam_infos]
    assert columns[0] == "model.name" and [i.name for i in experiment.hparam_infos if i.differs] == ["model.name"]
    logged = logged_hparams([read_run(m) for m in members])
    assert len(columns) > 1 and all(column in hparams for hparams in logged for column in columns)
    assert tree_hashes(sweep_dir) == SWEEP_FILES[project]  # the sweep's files only read
    shutil.rmtree(view)


CASES: dict[str, Case] = {
    "python train.py": Case(suffix="progress=false", check=default_run),
    "python train.py model=mlp model.emb=10 model.hidden=100": Case(),
    "python train.py model=trigram_table optim=full_batch": Case(),
    "python train.py model=additive": Case(),
    "python train.py model=trigram_count model.alpha=0.1": Case(suffix="progress=false"),
    "python train.py optim=sgd schedule=cosine": Case(),
    "python train.py experiment=karpathy_mlp": Case(suffix="steps=200 progress=false"),
    "python train.py experiment=karpathy_mlp model.backward=manual": Case(suffix="steps=200 progress=false"),
    "python train.py experiment=best": Case(),
    "python train.py -m experiment=best seeds=6 hydra/launcher=joblib hydra.launcher.n_jobs=2": Case(
        check=six_seeds_averaged
    ),
    "python train.py logger=wandb": Case(check=wandb_check),
    "python train.py logger=mlflow": Case(suffix="steps=300 progress=false", check=mlflow_check),
    "python train.py data.path=my_words.txt": Case(setup=words_file),
    "PYTHONPATH=. python train.py 'hydra.searchpath=[file://my_conf]' model=last_char": Case(
        block=True, check=user_model_check
    ),
    "python train.py -m model.emb=4,10 model.hidden=50,200 seeds=3": Case(check=seeds_check(12)),
    "python sweep.py sweep=models": Case(check=sweep_of(len(OPTIONS))),
    "python train.py rerun=outputs/<run>": Case(suffix="", setup=finished_run, check=same_losses_as_the_source),
    "python train.py 'rerun=\"outputs/multirun/<sweep>/mlp s43\"'": Case(
        suffix="", setup=a_sweep_with_a_seed_43_member, check=same_losses_as_the_member
    ),
    "python -m makemore.diff outputs/<run-a> outputs/<run-b>": Case(suffix="", setup=two_seeds, check=diff_check),
    "python -m makemore.ensemble outputs/<run-a> outputs/<run-b> outputs/<run-c>": Case(
        suffix="", setup=three_families, check=ensemble_check
    ),
    "python train.py -m model=mlp,gru,wavenet ensemble_best=3": Case(check=best_three_ensembled),
    "python -m makemore.sample outputs/<run> -n 50 --temperature 0.8 --top-k 10 --seed 1 --prefix em -o samples.txt": (
        Case(suffix="", setup=finished_run, check=sample_check)
    ),
    "python -m makemore.evaluate outputs/<run> --split dev": Case(suffix="", setup=finished_run, check=evaluated_dev),
    "python -m makemore.evaluate outputs/<run> --data pokemon.txt --skip-unseen": Case(
        suffix="", setup=finished_run, block=True, check=evaluated_pokemon
    ),
    "python sweep.py report=outputs eval_data=pokemon.txt": Case(
        suffix="", setup=pokemon_file, check=report_with_eval_check
    ),
    "python sweep.py sweep=mlp_grid": Case(check=sweep_of(8)),
    "python sweep.py sweep=optuna_mlp": Case(suffix=f"hydra.sweeper.n_trials=5 {QUICK}", check=search_with_importances),
    "python sweep.py sweep=optuna_mlp seeds=3": Case(
        suffix=f"hydra.sweeper.n_trials=4 {QUICK}", check=trials_over_seeds
    ),
    "python sweep.py sweep=optuna_mlp 'hydra.sweeper.objectives=[dev_loss,params]'": Case(
        suffix=f"hydra.sweeper.n_trials=6 {QUICK}", check=pareto_front_marked
    ),
    "python sweep.py sweep=optuna_mlp 'hydra.sweeper.objectives=[seconds_to_target]'": Case(
        suffix="hydra.sweeper.n_trials=4 steps=300 eval_interval=25 target=2.6 progress=false",
        check=fastest_to_the_target,
    ),
    "python sweep.py sweep=optuna_mlp hydra/sweeper/pruner=median hydra/launcher=joblib hydra.launcher.n_jobs=2 "
    "hydra.sweeper.n_jobs=2": Case(
        suffix="hydra.sweeper.pruner.n_startup_trials=2 hydra.sweeper.n_trials=8 steps=600 eval_interval=50 "
        "progress=false",
        check=slots_refilled,
    ),
    "python sweep.py sweep=optuna_mlp hydra.sweeper.confirm=2": Case(
        suffix=f"hydra.sweeper.n_trials=3 {QUICK}", check=best_trials_confirmed
    ),
    "python sweep.py sweep=optuna_mlp hydra/sweeper/pruner=successive_halving": Case(
        suffix=f"hydra.sweeper.n_trials=3 {QUICK}", check=sweep_of(3, status="pruned")
    ),
    "python sweep.py sweep=lr_finder": Case(suffix="steps=100 progress=false", check=lr_finder_check),
    "python sweep.py report=outputs": Case(suffix="", setup=finished_run, check=report_check),
    "python train.py -m model=trigram_table,additive,mlp": Case(check=sweep_of(3)),
    "python train.py seeds=5": Case(check=seeds_check(5)),
    "python sweep.py sweep=mlp_grid hydra/launcher=joblib hydra.launcher.n_jobs=2": Case(check=parallel_sweep_of(8)),
    "python sweep.py sweep=mlp_grid hydra/launcher=slurm hydra.launcher.partition=gpu": Case(
        compose_only="SLURM needs a cluster's sbatch: the command composes here, and submitit_local runs the rest"
    ),
    "python sweep.py sweep=mlp_grid hydra/launcher=submitit_local": Case(check=parallel_sweep_of(8)),
    "python sweep.py sweep=optuna_mlp hydra/launcher=slurm hydra.launcher.partition=gpu hydra.sweeper.n_jobs=16 "
    "'hydra.sweeper.storage=\"postgresql://user@dbhost/optuna\"'": Case(
        compose_only="SLURM and the database server are a cluster's: the command composes here"
    ),
    "python train.py -m hydra/launcher=population seeds=16": Case(check=one_population_of(16)),
    "python train.py -m optim=adamw,lion seeds=4 hydra/launcher=population": Case(
        suffix="steps=300 progress=false", check=each_optimizer_a_population_its_members_solo_runs
    ),
    "python train.py -m hydra/launcher=population model.emb=4,10 optim.lr=0.01,0.03 seeds=2": Case(
        check=the_basic_launchers_numbers
    ),
    "python sweep.py sweep=optuna_lr hydra/launcher=population hydra/sweeper/pruner=median": Case(
        suffix="hydra.sweeper.n_trials=8 hydra.sweeper.n_jobs=4 hydra.sweeper.pruner.n_startup_trials=2 steps=400 "
        "progress=false",
        check=trials_pruned_one_by_one,
    ),
    "python sweep.py sweep=optuna_mlp seeds=4 hydra/launcher=population hydra/sweeper/pruner=successive_halving": Case(
        suffix="hydra.sweeper.n_trials=4 steps=300 progress=false", check=pruned_seed_groups_in_populations
    ),
    "python sweep.py sweep=optuna_mlp hydra/sweeper/pruner=median hydra.sweep.dir=outputs/search": Case(
        suffix=f"hydra.sweeper.n_trials=4 {QUICK}", check=two_processes_share_one_study
    ),
    "python sweep.py sweep=optuna_mlp hydra.sweep.dir=outputs/search hydra.sweeper.storage=<database>": Case(
        suffix=f"hydra.sweeper.n_trials=4 {QUICK}", setup=database, check=workers_share_one_database_study
    ),
    "PYTHONPATH=. python train.py +logger.printer._target_=my_logger.PrintLogger +logger.printer.prefix=mine": Case(
        block=True, check=printed_logger_check
    ),
    "python -m makemore.experiments.bench": Case(suffix="--smoke", check=bench_check),
    "python -m makemore.experiments.bench --quick": Case(suffix="--smoke", check=bench_check),
    "python -m makemore.experiments.bench --parallel": Case(suffix="--smoke", check=bench_check),
    "python -m makemore.experiments.bench --pruning successive_halving": Case(suffix="--smoke", check=bench_check),
    "python -m makemore.experiments.bench --pruning successive_halving --seeds 4 --launcher population": Case(
        suffix="--smoke", check=bench_check
    ),
    "python -m makemore.experiments.bench --population": Case(suffix="--smoke", check=population_bench_check),
    "python -m makemore.experiments.bench --dashboard 10000": Case(suffix="--smoke", check=dashboard_bench_check),
    "python -m makemore.experiments.bench --startup": Case(suffix="--smoke", check=startup_bench_check),
    "python -m makemore.experiments.on_device": Case(suffix="--smoke", check=device_table_check),
    "python train.py resume=outputs/<run>": Case(suffix="", setup=interrupted_run, check=resumed_check),
    "python -m makemore.view outputs/multirun/<sweep>": Case(
        suffix="", setup=a_sweep_of_three_families, check=a_view_on_the_swept_keys
    ),
}


def test_every_readme_command_has_a_case():
    assert sorted(readme_commands()) == sorted(CASES), "a shown command without a case here, or a case for one dropped"


@pytest.mark.parametrize(
    "command",
    [pytest.param(command, marks=pytest.mark.slow, id=command[:80]) for command in CASES],
)
def test_the_readme_command_runs_as_written(project, command):
    case = CASES[command]
    (project / "docs").mkdir()
    filled = command
    for placeholder, value in (case.setup(project) if case.setup else {}).items():
        filled = filled.replace(placeholder, value)
    runs_before = set(runs_under(project))
    if case.compose_only:
        result = bash(project, f"{filled} --cfg hydra")
        assert result.returncode == 0, result.stderr[-2000:]
        assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in result.stdout
        assert "partition: gpu" in result.stdout
        assert "max_num_timeout: 20" in result.stdout and "signal_delay_s: 120" in result.stdout  # it requeues
        return
    line = f"{filled} {case.suffix}".strip()
    if case.block:
        script = code_block_of(command).replace(command, line)
    elif "hydra.sweep.dir=outputs/search" in command:  # the README's two terminals, at the same time
        script = f"({line}) & ({line}); wait"
    else:
        script = line
    result = bash(project, script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if case.setup is None and not case.block and not command.startswith("python -m"):
        assert set(runs_under(project)) != runs_before or sweep_roots(project)
    if case.check:
        case.check(project, result)


def test_the_readme_figures_for_whole_item_batches_and_the_data_hold():
    from makemore.config import compose_train_config
    from makemore.data import build_items, make_dataset, read_items, resolve_path
    from makemore.preflight import prepare

    cfg, items, vocab = prepare(compose_train_config("model=gru"))
    dataset = make_dataset(items, vocab, cfg.model.block_size)
    train_items = len(build_items(dataset.words["train"], vocab)[1])
    per_batch = round(256 * train_items / len(dataset.Y["train"]))
    assert f"({per_batch} names at the default 256)" in README
    assert len(read_items(resolve_path(None))) == 32033 and "32,033-name" in README
    three = make_dataset(items, vocab, 3)
    sizes = [f"{len(three.Y[split]):,}" for split in ("train", "dev", "test")]
    assert " / ".join(sizes) == "182,625 / 22,655 / 22,866" and "182,625 / 22,655 / 22,866 examples" in README


def test_the_readme_parameter_counts_are_the_models():
    from makemore.config import compose_train_config
    from makemore.models import build_model

    measured = README[README.index("`sweep=models` runs each family") :]  # the first table after it
    rows = measured[measured.index("\n|") :].split("\n\n")[0]
    table = re.findall(r"^\| \d+ \| (\w+) \| ([\d,]+) \|", rows, flags=re.M)
    assert sorted(family for family, _ in table) == sorted(OPTIONS)
    for family, params in table:
        model = build_model(compose_train_config(f"model={family}").model, 27)
        counted = sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
        assert f"{counted:,}" == params, family
    counts = dict(table)  # the prose's figures are the table's
    assert f"`wavenet` is lecture 5's hierarchical model ({counts['wavenet']} parameters at its" in README
    assert f"then a tanh MLP;\n{counts['bow']} parameters)" in README
    assert f"(a) throughput, MLP {counts['mlp']} params" in README
