"""The report on its own, over run directories written by hand: ranking, seed groups and their verdict, curves,
the HParams columns of a sweep, the lr finder and the end-of-sweep callbacks."""

import csv
import json
import os
import shlex
import shutil
import statistics

import matplotlib.pyplot as plt
import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore import plots
from makemore.dashboard import fixed_width_tables
from makemore.loggers import option_node
from makemore.report import (
    LeaderboardCallback,
    LrFinderCallback,
    dev_curve,
    differing_hparams,
    find_runs,
    group_label,
    label,
    main,
    markdown,
    mean_band,
    ranked_groups,
    read_run,
    refresh_dashboard,
    seed_groups,
    significant,
    suggest_lr,
    swept_hparams,
    varying_overrides,
    verdict,
    view_runs,
    write_csv,
    write_lr_finder,
    write_report,
)

from helpers import compose_config

OK = dict(status="ok", train_loss=2.0, test_loss=2.2, params=100, steps=10, train_seconds=1.5, target=2.2)


def fake_run(root, name, overrides, history=None, config=None, **metrics):
    """A run directory as train.py leaves it: its overrides, metrics, and optionally history.csv and config."""
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if history:
        with open(run_dir / "history.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    if config is not None:
        OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    return run_dir


def drawn(monkeypatch) -> list[dict]:
    """What the report hands the leaderboard picture, recorded on its way to the real plotting code."""
    calls = []
    draw = plots.leaderboard_figure

    def recording(curves, costs, target, bands=None, pareto=None):
        calls.append({"curves": curves, "costs": costs, "target": target, "bands": bands, "pareto": pareto})
        return draw(curves, costs, target, bands, pareto)

    monkeypatch.setattr(plots, "leaderboard_figure", recording)
    return calls


def test_leaderboard_ranks_by_dev_loss_and_puts_failures_last(tmp_path, capsys, monkeypatch):
    fake_run(tmp_path, "a_slow", ["model.emb=4", "seed=1"], dev_loss=2.31, target_met=False, **OK)
    fake_run(tmp_path, "z_best", ["model.emb=16", "seed=1"], dev_loss=2.15, target_met=True, **OK)
    fake_run(tmp_path, "b_broken", ["model.emb=8", "seed=1"], status="diverged", error="loss became nan by step 10")
    fake_run(tmp_path, "c_middle", ["model.emb=8", "seed=1"], dev_loss=2.20001, target_met=False, **OK)
    fake_run(tmp_path, "y_infinite", ["seed=1"], **{**OK, "dev_loss": None, "train_loss": None})  # JSON's null: inf
    fake_run(tmp_path, "a_unknown", ["seed=1"])  # metrics.json without a status
    fake_run(tmp_path / "nested", "0", ["seed=1"], dev_loss=2.4, **OK)
    pictures = drawn(monkeypatch)
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "metrics.json").write_text("{not json")
    with pytest.warns(UserWarning, match="skipping unreadable run"):
        rows = write_report(tmp_path)
    assert [(r["rank"], r["run"], r["dev"], r["train"], r["test"]) for r in rows] == [
        (1, "z_best", "2.1500", "2.0000", "2.2000"),
        (2, "c_middle", "2.2000", "2.0000", "2.2000"),
        (3, "a_slow", "2.3100", "2.0000", "2.2000"),
        (4, "nested/0", "2.4000", "2.0000", "2.2000"),
        (5, "y_infinite", "inf", "inf", "2.2000"),
        ("-", "a_unknown", "", "", ""),
        ("-", "b_broken", "", "", ""),
    ]
    assert [r["dev<2.2"] for r in rows] == ["✓", "✗", "✗", "✗", "✗", "✗", "✗"]
    assert rows[6]["status"] == "diverged: loss became nan by step 10" and rows[0]["status"] == "ok"
    assert rows[5]["status"] == "?"
    assert "model.emb" in rows[0] and "seed" not in rows[0]  # only overrides that differ get a column
    assert rows[0]["model.emb"] == "16" and rows[0]["params"] == 100 and rows[0]["seconds"] == "1.5"
    assert rows[4]["model.emb"] == "" and rows[6]["params"] == rows[6]["steps"] == ""  # absent, not None
    assert rows[0]["steps"] == 10 and rows[6]["seconds"] == ""
    [picture] = pictures  # curves of the finished runs, named by what differs, else by their directory
    assert list(picture["curves"]) == ["emb=16", "emb=8", "emb=4", "nested/0"]
    assert picture["costs"]["emb=16"] == (1.5, 2.15) and picture["target"] == 2.2 and not picture["bands"]
    assert shlex.split(rows[0]["rerun"]) == ["python", "train.py", f"rerun={os.path.relpath(tmp_path / 'z_best')}"]
    out = capsys.readouterr().out
    assert f"leaderboard of 7 runs in {tmp_path} (best dev 2.1500: target 2.2 met)" in out
    assert out.endswith(f"|\nwritten: {tmp_path}/leaderboard.{{md,csv,png}}\n")  # the table, then what was written
    assert (tmp_path / "leaderboard.md").read_text() == markdown(rows)
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        assert [row["run"] for row in csv.DictReader(f)] == [r["run"] for r in rows]
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000
    assert not (tmp_path / "leaderboard_groups.csv").exists()  # no seed varies: no groups


def test_a_target_not_met_and_a_run_without_one_say_so(tmp_path, capsys):
    fake_run(tmp_path, "one", ["seed=1"], dev_loss=2.2, target_met=False, **OK)
    write_report(tmp_path)
    assert "(best dev 2.2000: target 2.2 not met)" in capsys.readouterr().out  # met means below it
    no_target = tmp_path / "other"
    fake_run(no_target, "one", ["seed=1"], dev_loss=2.3, **{**OK, "target": None})
    rows = write_report(no_target)
    assert "(best dev 2.3000: no target)" in capsys.readouterr().out and rows[0]["dev<target"] == ""
    failed = tmp_path / "failed"
    fake_run(failed, "one", ["seed=1"], status="failed", error="boom")
    assert write_report(failed)[0]["dev<target"] == "✗"
    assert "(no finished run)" in capsys.readouterr().out


def test_a_run_is_read_from_its_overrides_and_metrics(tmp_path):
    run_dir = fake_run(tmp_path, "run", ["+seed=3", "~model.emb", "model.hidden=a=b"], dev_loss=2.0, **OK)
    run = read_run(run_dir)
    assert run["dir"] == run_dir and run["metrics"]["dev_loss"] == 2.0
    assert run["overrides"] == {"seed": "3", "model.emb": "", "model.hidden": "a=b"}
    (run_dir / "metrics.json").unlink()
    assert read_run(run_dir)["metrics"] == {
        "status": "incomplete",
        "error": "no metrics.json: still running, or killed",
    }
    (run_dir / ".hydra" / "overrides.yaml").unlink()
    assert read_run(run_dir)["overrides"] == {}
    (run_dir / "metrics.json").write_text("[1, 2]")
    with pytest.warns(UserWarning, match=f"skipping unreadable run {run_dir}: unexpected contents"):
        assert read_run(run_dir) is None


def test_runs_are_found_by_their_metrics_or_record_but_not_inside_wandb(tmp_path):
    finished = fake_run(tmp_path, "finished", [], **OK)
    started = tmp_path / "started"
    (started / ".hydra").mkdir(parents=True)
    (started / ".hydra" / "config.yaml").write_text("{}")
    (tmp_path / "finished" / "wandb" / "run-1").mkdir(parents=True)
    (tmp_path / "finished" / "wandb" / "run-1" / "metrics.json").write_text("{}")
    (tmp_path / "nothing").mkdir()
    assert find_runs(tmp_path) == [finished, started]


def test_markdown_is_a_table_with_escaped_pipes():
    rows = [{"rank": 1, "run": "a|b", "dev": "2.1000"}, {"rank": "-", "run": "long name", "dev": ""}]
    assert markdown(rows) == (
        "| rank | run       | dev    |\n"
        "| ---- | --------- | ------ |\n"
        "| 1    | a\\|b      | 2.1000 |\n"
        "| -    | long name |        |\n"
    )
    assert markdown([]) == "no runs found\n"
    assert markdown([{"a": 1, "b": 2}, {"a": 3}]).splitlines()[-1] == "| 3 |   |"  # a missing cell is blank


def test_the_dev_curve_is_every_evaluation_then_the_final_loss(tmp_path):
    history = [
        {"step": 0, "loss/train": 3.3, "loss/dev": 3.29},
        {"step": 5, "loss/train": 2.9, "loss/dev": ""},
        {"step": 10, "loss/train": 2.5, "loss/dev": 2.51},
    ]
    run = read_run(fake_run(tmp_path, "run", [], history=history, dev_loss=2.5, **OK))
    assert dev_curve(run) == [(0, 3.29), (10, 2.51), (10, 2.5)]
    (run["dir"] / "history.csv").unlink()
    run["metrics"] = {"status": "diverged"}
    assert dev_curve(run) == [(0, float("inf"))]


def seeded(tmp_path, devs: dict[str, list[float | None]]) -> None:
    """One fake run per (config, seed), seeds 2 and 10 (sorted as numbers); None is a failed seed."""
    for emb, losses in devs.items():
        for seed, dev in zip(("2", "10"), losses):
            if dev is None:
                fake_run(tmp_path, f"{emb}_{seed}", [f"model.emb={emb}", f"seed={seed}"], status="failed", error="x")
            else:
                metrics = {**OK, "train_loss": dev - 0.1, "test_loss": dev + 0.01, "train_seconds": dev}
                fake_run(
                    tmp_path,
                    f"{emb}_{seed}",
                    [f"model.emb={emb}", f"seed={seed}", "progress=false"],
                    dev_loss=dev,
                    history=[{"step": 0, "loss/dev": dev + 1}, {"step": 5, "loss/dev": dev + 0.5}],
                    **metrics,
                )


def test_seed_groups_are_ranked_by_their_mean_against_their_spread(tmp_path, capsys):
    seeded(tmp_path, {"16": [2.30, 2.34], "4": [2.10, 2.12], "8": [None, None]})  # ranks differ from names' order
    write_report(tmp_path)
    with open(tmp_path / "leaderboard_groups.csv", newline="") as f:
        groups = list(csv.DictReader(f))
    assert [(g["rank"], g["group"], g["n"], g["seeds"], g["status"]) for g in groups] == [
        ("1", "emb=4", "2", "2 10", "2 of 2 ok"),
        ("2", "emb=16", "2", "2 10", "2 of 2 ok"),
        ("-", "emb=8", "0", "2 10", "0 of 2 ok"),
    ]
    best = groups[0]
    assert best["dev mean"] == f"{statistics.fmean([2.10, 2.12]):.4f}" == "2.1100"
    assert best["dev std"] == f"{statistics.stdev([2.10, 2.12]):.4f}" == "0.0141"
    assert (best["train mean"], best["test mean"], best["seconds"]) == ("2.0100", "2.1200", "2.1")
    assert groups[2]["dev mean"] == groups[2]["dev std"] == groups[2]["seconds"] == ""
    out = capsys.readouterr().out
    expected = (
        "emb=4 beats emb=16 by 0.2100 dev, more than their seed-to-seed spread "
        "(0.0141 + 0.0283 = 0.0424): a real difference"
    )
    assert expected in out and expected in (tmp_path / "leaderboard.md").read_text()
    assert (tmp_path / "leaderboard.md").read_text().startswith("| rank | group  | n | seeds | dev mean |")
    assert "every run:" in (tmp_path / "leaderboard.md").read_text()


def test_the_picture_shows_the_six_best_seed_groups_as_bands(tmp_path, monkeypatch):
    seeded(tmp_path, {str(emb): [2.0 + emb / 100, 2.01 + emb / 100] for emb in range(1, 8)} | {"9": [None, None]})
    pictures = drawn(monkeypatch)
    write_report(tmp_path)
    [picture] = pictures
    assert list(picture["bands"]) == [f"emb={emb}" for emb in range(1, 7)] and picture["curves"] == {}
    steps, means, _ = picture["bands"]["emb=1"]
    assert steps == [0, 5, 10] and means == pytest.approx([3.015, 2.515, 2.015])  # the seeds' mean at each step
    assert picture["costs"]["emb=7"] == (2.1, 2.075) and len(picture["costs"]) == 7 and picture["target"] == 2.2


def test_seed_groups_within_their_spread_are_no_difference(tmp_path, capsys):
    seeded(tmp_path, {"16": [2.11, 2.15], "4": [2.10, 2.12]})
    write_report(tmp_path)
    assert (
        "emb=4 beats emb=16 by 0.0200 dev, within their seed-to-seed spread (0.0141 + 0.0283 = "
        "0.0424): not a difference these seeds can tell apart"
    ) in capsys.readouterr().out


def test_a_group_of_one_seed_a_seed_left_default_and_a_sweep_over_seeds_alone(tmp_path, capsys):
    seeded(tmp_path, {"4": [2.10, 2.12], "16": [2.30, None], "8": [2.20, 2.24]})
    fake_run(tmp_path, "16_default", ["model.emb=16"], dev_loss=2.4, **OK)  # the default seed: no seed override
    write_report(tmp_path)
    with open(tmp_path / "leaderboard_groups.csv", newline="") as f:
        groups = {g["group"]: g for g in csv.DictReader(f)}
    assert (groups["emb=16"]["seeds"], groups["emb=16"]["n"], groups["emb=16"]["dev std"]) == (
        " 2 10",
        "2",
        "0.0707",
    )
    assert [groups[g]["rank"] for g in ("emb=4", "emb=8", "emb=16")] == ["1", "2", "3"]
    assert "emb=4 beats emb=8 by 0.1100 dev" in capsys.readouterr().out  # three finished: the first two
    alone = tmp_path / "alone"
    for seed, dev in (("1", 2.1), ("2", 2.2)):
        fake_run(alone, seed, [f"seed={seed}", "steps=5"], dev_loss=dev, **OK)
    write_report(alone)
    with open(alone / "leaderboard_groups.csv", newline="") as f:
        assert [(g["group"], g["n"], g["dev mean"]) for g in csv.DictReader(f)] == [("all", "2", "2.1500")]
    one = tmp_path / "one"
    fake_run(one, "a", ["seed=1", "model.emb=4"], dev_loss=2.1, **OK)
    fake_run(one, "b", ["seed=2", "model.emb=8"], dev_loss=2.2, **OK)
    write_report(one)
    with open(one / "leaderboard_groups.csv", newline="") as f:
        assert [(g["group"], g["dev std"]) for g in csv.DictReader(f)] == [("emb=4", ""), ("emb=8", "")]


def test_a_gap_equal_to_the_spread_is_within_it():
    best = {"n": 2, "group": "a", "dev mean": "2.5000", "dev std": "0.1250"}
    second = {"n": 2, "group": "b", "dev mean": "2.7500", "dev std": "0.1250"}  # exact in binary: gap 0.25 = spread
    assert verdict([best, second]) == (
        "a beats b by 0.2500 dev, within their seed-to-seed spread (0.1250 + 0.1250 = "
        "0.2500): not a difference these seeds can tell apart"
    )


def test_a_label_is_every_varying_key_of_the_run():
    run = {"overrides": {"model.emb": "4", "seed": "1", "steps": "5"}}
    assert label(run, ["model.emb", "model.hidden", "seed"]) == "emb=4 s1"  # as the run's directory is named


def test_a_label_shows_4_significant_digits_after_the_trial_and_keeps_the_rest_as_written():
    lr = "0.013737845955327985"
    trial = {"overrides": {"optim.lr": lr, "model.hidden": "350", "model.emb": "10", "trial": "3", "seed": "42"}}
    varying = ["model.emb", "model.hidden", "optim.lr"]
    assert label(trial, varying) == "t3 emb=10 hidden=350 lr=0.01374"
    wide = {**trial["overrides"], "model.block_size": "4", "optim.weight_decay": "0.1", "model.dropout": "0.25"}
    every = ["model.block_size", "model.dropout", *varying, "optim.weight_decay"]
    assert label({"overrides": wide}, every[:1] + varying) == "t3 bs=4 emb=10 hidden=350 lr=0.01374"
    assert label({"overrides": wide}, every) == "t3 bs=4 dropout=0.25 emb=10 ..."  # cut to 39 characters
    assert [significant(v) for v in ("3e-3", "1e-05", "0.5", "-12", "123456", "inf", "adamw", "0.1234567")] == [
        "0.003",
        "1e-05",
        "0.5",
        "-12",
        "123456",
        "inf",
        "adamw",
        "0.1235",
    ]
    confirming = {"overrides": {k: v for k, v in trial["overrides"].items() if k != "trial"} | {"seed": "45"}}
    assert group_label([confirming, trial], varying) == "t3 emb=10 hidden=350 lr=0.01374"  # the trial's number
    assert label(confirming, varying) == "emb=10 hidden=350 lr=0.01374"  # no trial: every key, as written
    assert group_label([confirming], []) == "all"


def test_seed_groups_whose_labels_round_alike_keep_their_own_runs(tmp_path):
    for lr in ("0.0123459", "0.0123451"):  # both 0.01235 at 4 significant digits
        for seed in ("1", "2"):
            fake_run(tmp_path, f"{lr}_{seed}", [f"optim.lr={lr}", f"seed={seed}"], dev_loss=float(lr) * 100, **OK)
    ranked = ranked_groups(seed_groups([read_run(d) for d in find_runs(tmp_path)]))
    assert [row["group"] for row, _ in ranked] == ["lr=0.01235", "lr=0.01235"]
    for row, group in ranked:
        assert {run["overrides"]["optim.lr"] for run in group} == {"0.0123451" if row["rank"] == 1 else "0.0123459"}


def test_an_empty_leaderboard_csv_still_has_a_header(tmp_path):
    write_csv(tmp_path / "empty.csv", [])
    assert (tmp_path / "empty.csv").read_text() == "run\n"


def test_how_runs_are_watched_makes_no_column_and_no_group(tmp_path):
    for name, seed, project in (("a", "1", "x"), ("b", "2", "y"), ("c", "1", "y"), ("d", "2", "x")):
        fake_run(tmp_path, name, [f"seed={seed}", f"logger.wandb.project={project}", "model.emb=4"], dev_loss=2.0, **OK)
    runs = runs_in(tmp_path)
    assert varying_overrides(runs) == ["seed"]
    assert [sorted(run["dir"].name for run in group) for group in seed_groups(runs)] == [["a", "b", "c", "d"]]


def test_only_a_finished_run_counts_as_the_best(tmp_path, capsys):
    fake_run(tmp_path, "finished", ["seed=1"], dev_loss=2.3, **OK)
    fake_run(tmp_path, "pruned", ["seed=2"], **{**OK, "status": "pruned at step 5 (dev 2.0000)", "dev_loss": 2.0})
    rows = write_report(tmp_path)
    assert "(best dev 2.3000: target 2.2 not met)" in capsys.readouterr().out
    assert [(r["run"], r["rank"]) for r in rows] == [("finished", 1), ("pruned", "-")]


def test_a_verdict_needs_two_groups_and_a_spread():
    row = {"n": 1, "group": "a", "dev mean": "2.1000", "dev std": ""}
    assert verdict([row]) == "only one group finished: nothing to compare"
    assert verdict([row, {**row, "n": 0}]) == "only one group finished: nothing to compare"
    second = {"n": 1, "group": "b", "dev mean": "2.1500", "dev std": ""}
    assert verdict([row, second]) == "a leads b by 0.0500 dev, but with one seed there is no spread to judge it by"
    assert "no spread" in verdict([{**row, "dev std": "0.0100"}, second])


def test_a_band_is_the_mean_and_spread_at_the_steps_every_curve_has():
    steps, means, stds = mean_band([[(0, 3.0), (10, 2.0)], [(0, 5.0), (10, 4.0), (20, 1.0)]])
    assert (steps, means, stds) == ([0, 10], [4.0, 3.0], [1.0, 1.0])


def test_a_report_inside_a_run_directory_only_prints(tmp_path, capsys):
    run_dir = fake_run(tmp_path, "run", [], dev_loss=2.0, **OK)
    (run_dir / ".hydra" / "config.yaml").write_text("{}")
    assert write_report(run_dir)[0]["run"] == "run"
    assert f"not written: {run_dir} is inside the run directory {run_dir}" in capsys.readouterr().out
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "metrics.json"]


def test_the_report_command_needs_a_directory(tmp_path, capsys):
    assert main(str(tmp_path / "nowhere")) == 1
    assert (
        f"error: no directory {tmp_path / 'nowhere'}; report=<a sweep directory, or outputs>" in capsys.readouterr().err
    )
    fake_run(tmp_path, "run", [], dev_loss=2.0, **OK)
    assert main(str(tmp_path)) == 0 and (tmp_path / "leaderboard.md").exists()
    written = {name: (tmp_path / name).read_bytes() for name in ("leaderboard.md", "leaderboard.csv")}
    capsys.readouterr()
    fake_run(tmp_path, "later", [], dev_loss=1.9, **OK)
    assert main(str(tmp_path)) == 0  # report= never rewrites a leaderboard: it prints today's and says why
    assert capsys.readouterr().out.endswith(
        f"not written: {tmp_path / 'leaderboard.md'} exists (a sweep or an earlier report wrote it) and no command "
        "changes what the project wrote; the table above is today's\n"
    )
    assert {name: (tmp_path / name).read_bytes() for name in written} == written
    assert len(write_report(tmp_path)) == 2 and b"later" in (tmp_path / "leaderboard.md").read_bytes()  # a sweep's end


def configured(tmp_path, name, *overrides, steps=10):
    """A fake run whose saved config is what `train.py <overrides>` composes."""
    config = compose_config(*overrides)
    return fake_run(tmp_path, name, list(overrides), config=config, dev_loss=2.0, **{**OK, "steps": steps})


def runs_in(tmp_path):
    return [read_run(d) for d in find_runs(tmp_path)]


def test_hparams_columns_are_what_a_sweep_swept(tmp_path):
    configured(tmp_path / "emb", "0", "model.emb=4", "steps=5")
    configured(tmp_path / "emb", "1", "model.emb=16", "steps=5")
    assert swept_hparams(runs_in(tmp_path / "emb")) == ["model.emb"]
    assert differing_hparams(runs_in(tmp_path / "emb")) == {"model.emb"}
    configured(tmp_path / "models", "0", "model=mlp")
    configured(tmp_path / "models", "1", "model=rnn")
    assert swept_hparams(runs_in(tmp_path / "models")) == ["model.name"]
    assert {"model.name", "model.emb", "model.hidden"} <= differing_hparams(runs_in(tmp_path / "models"))
    assert "model._target_" not in differing_hparams(runs_in(tmp_path / "models"))  # model.name says it
    configured(tmp_path / "budget", "0", "budget=mlp", "seed=1", "optim.lr=0.02")
    configured(tmp_path / "budget", "1", "budget=gru", "seed=2", "optim.lr=0.01")
    assert swept_hparams(runs_in(tmp_path / "budget")) == [
        "model.name",
        "steps",
        "optim.lr",
        "seed",
    ]  # a preset's first
    configured(tmp_path / "schedule", "0", "schedule=cosine", "seed=1")
    configured(tmp_path / "schedule", "1", "schedule=step", "seed=2")
    assert swept_hparams(runs_in(tmp_path / "schedule")) == ["schedule.name", "seed"]  # a group by its option's name
    configured(tmp_path / "unswept", "0", "model.emb=4", "steps=5")
    configured(tmp_path / "unswept", "1", "model.emb=16", "steps=6")
    for run_dir in (tmp_path / "unswept").iterdir():  # steps differ, but the sweep swept only model.emb
        overrides = run_dir / ".hydra" / "overrides.yaml"
        overrides.write_text("".join(line for line in overrides.read_text().splitlines(True) if "steps" not in line))
    assert swept_hparams(runs_in(tmp_path / "unswept")) == ["model.emb"]


def test_a_counting_run_differs_by_its_model_not_by_an_optimizer_it_never_used(tmp_path):
    configured(tmp_path, "0", "model=bigram_count", steps=0)
    configured(tmp_path, "1", "model=trigram_count", steps=0)
    assert differing_hparams(runs_in(tmp_path)) == {"model.name", "model.block_size", "model.alpha"}  # 1.0 vs 0.1
    configured(tmp_path, "2", "model=trigram_table", "optim=full_batch")
    differing = differing_hparams(runs_in(tmp_path))
    assert {"optim.name", "steps", "model.alpha"} <= differing and "optim.lr" not in differing  # one value where set
    (tmp_path / "3" / ".hydra").mkdir(parents=True)  # no saved config: no part in the columns
    (tmp_path / "3" / "metrics.json").write_text(json.dumps({**OK, "dev_loss": 2.0}))
    assert differing_hparams(runs_in(tmp_path)) == differing


def test_without_swept_keys_the_columns_are_everything_that_differs(tmp_path):
    configured(tmp_path, "0", "steps=5")
    configured(tmp_path, "1", "steps=5")
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text("[]")
    OmegaConf.save(compose_config("steps=6"), tmp_path / "1" / ".hydra" / "config.yaml")
    assert swept_hparams(runs_in(tmp_path)) == ["steps"]


def test_the_suggested_lr_is_where_the_smoothed_loss_bottoms_out():
    lrs = [10 ** (-3 + 3 * i / 99) for i in range(100)]
    losses = [(i - 70) ** 2 / 1000 + 2.0 + (0.3 if i % 7 == 0 else 0.0) for i in range(100)]  # minimum at i = 70
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[70], rel=0.15)
    falling = [(i - 70) ** 2 / 1000 + 2.0 for i in range(50)]
    assert suggest_lr(lrs[:50], falling) == lrs[49]  # still falling at the end: the last lr


@pytest.mark.parametrize(
    "losses, index",
    [
        ([9, 9, 9, 9, 0, 9, 9, 2, 2, 2], 8),  # 10 points: smoothed over +-1, the wide dip's middle beats the spike
        ([0, 6, 6, 6, 6, 6, 6, 6, 6, 1], 0),  # the first point is smoothed with its one right neighbour only
        ([9] * 10 + [0] + [9] * 18 + [3] * 5 + [9] * 6, 31),  # 40 points: +-2, the middle of the five-wide dip
    ],
)
def test_the_loss_is_smoothed_over_a_twentieth_of_the_points_either_side(losses, index):
    assert suggest_lr(list(range(len(losses))), losses) == index


def test_the_lr_finder_plots_and_suggests_from_the_history(tmp_path, capsys):
    lrs = [10 ** (-3 + 3 * i / 99) for i in range(100)]
    losses = [(i - 40) ** 2 / 1000 + 2.0 for i in range(100)]
    run_dir = fake_run(
        tmp_path,
        "run",
        [],
        history=[{"step": i, "lr": lr, "loss/train": loss} for i, (lr, loss) in enumerate(zip(lrs, losses))],
        **OK,
    )
    assert write_lr_finder(run_dir, tmp_path) == suggest_lr(lrs, losses) == pytest.approx(lrs[40], rel=1e-9)
    assert (tmp_path / "lr_finder.png").stat().st_size > 10_000
    assert (
        f"suggested lr {lrs[40]:.3g} (the loss bottoms out there); plot: {tmp_path / 'lr_finder.png'}\n"
        in capsys.readouterr().out
    )
    (tmp_path / "lr_finder.png").unlink()
    LrFinderCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert (tmp_path / "lr_finder.png").exists()


def test_the_reports_figures_are_closed_once_written(tmp_path):
    fake_run(tmp_path, "run", ["seed=1"], history=[{"step": 1, "lr": 0.1, "loss/train": 3.0}], dev_loss=2.3, **OK)
    open_before = plt.get_fignums()
    write_report(tmp_path)
    write_lr_finder(tmp_path / "run", tmp_path)
    assert plt.get_fignums() == open_before  # pyplot would keep every figure of a long-lived process otherwise


def sweep_config(sweep_dir, backends=("tensorboard",)):
    sections = {name: option_node(name)[name] for name in backends}
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}, "logger": sections})


def end_of_a_sweep(config) -> None:
    """What Hydra calls on the leaderboard callback around a sweep that passed its checks."""
    callback = LeaderboardCallback()
    callback.on_multirun_start(config)
    callback.on_multirun_end(config)


def test_a_sweep_refused_before_it_began_writes_no_report(tmp_path):
    configured(tmp_path, "0", "model.emb=4", steps=10)
    LeaderboardCallback().on_multirun_end(sweep_config(tmp_path))  # Hydra 1.4 ends a sweep its checks stopped
    assert not (tmp_path / "leaderboard.md").exists()


def test_the_end_of_a_sweep_writes_its_leaderboard_hparams_and_target_line(tmp_path):
    configured(tmp_path, "0", "model.emb=4", steps=10)
    configured(tmp_path, "1", "model.emb=16", steps=30)
    (tmp_path / "2" / ".hydra").mkdir(parents=True)  # a member that never finished: no metrics, no steps
    (tmp_path / "2" / ".hydra" / "config.yaml").write_text("{}")
    end_of_a_sweep(sweep_config(tmp_path))
    assert (tmp_path / "leaderboard.md").exists()
    end_of_a_sweep(sweep_config(tmp_path))  # a continued sweep ends again: one target line, one experiment
    assert len(list((tmp_path / "target 2.2").iterdir())) == 1
    target = EventAccumulator(str(tmp_path / "target 2.2"))
    target.Reload()
    assert [(e.step, e.value) for e in target.Scalars("loss/dev")] == [
        (0, pytest.approx(2.2)),
        (30, pytest.approx(2.2)),
    ]
    assert len(list((tmp_path / "dashboard").glob("events.out.tfevents.*"))) == 1  # the HParams experiment
    root = EventAccumulator(str(tmp_path))  # the root as a run of its own: verdict, leaderboard, its picture
    root.Reload()

    def text(tag: str) -> str:
        return root.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()

    assert text("sweep/verdict") == "best dev 2.0000: target 2.2 met"
    assert text("sweep/leaderboard") == fixed_width_tables((tmp_path / "leaderboard.md").read_text())
    [*_, picture] = root.Images("sweep/leaderboard")
    assert picture.width > 1000 and picture.height > 300


def test_a_sweep_with_its_own_summary_from_an_earlier_makemore_is_named(tmp_path, capsys):
    from makemore.dashboard import write_hparams_experiment

    configured(tmp_path / "old", "0", "model.emb=4")
    (tmp_path / "old" / "multirun.yaml").write_text("{}")
    write_hparams_experiment(tmp_path / "scratch", {"model.emb": [4]}, ["model.emb"])
    [summary] = (tmp_path / "scratch").glob("events.out.tfevents.*")
    summary.rename(tmp_path / "old" / summary.name)  # where an earlier makemore wrote a sweep's summary
    refresh_dashboard(tmp_path, [])  # the first refresh of a view reads every run, and looks for such summaries
    warning = capsys.readouterr().err
    assert (
        warning.startswith(f"warning: {tmp_path / 'old'} holds an HParams summary of its own") and "0 more" in warning
    )
    (tmp_path / "old" / summary.name).unlink()
    (tmp_path / "dashboard.jsonl").unlink()  # read every run again
    refresh_dashboard(tmp_path, [])  # one summary in the view: nothing to say
    assert capsys.readouterr().err == ""


def test_a_sweep_with_a_member_that_did_not_finish_exits_1_and_counts_it_in_its_last_line(tmp_path, capsys):
    configured(tmp_path, "0", "model.emb=4")
    fake_run(tmp_path, "1", ["seed=1"], status="failed", error="bad")
    fake_run(tmp_path, "2", ["seed=2"], status="interrupted", error="stopped")
    fake_run(tmp_path, "3", ["seed=3"], status="diverged", error="nan")  # a result of the sweep, not a failure
    with pytest.raises(SystemExit) as stop:
        end_of_a_sweep(sweep_config(tmp_path))
    assert stop.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(
        f"error: 2 of 4 members of the sweep did not finish (1 failed, 1 interrupted); the reasons are in "
        f"{tmp_path}/leaderboard.md; continue it with: "
    ) and last.endswith(f"hydra.sweep.dir={tmp_path}")


def test_a_sweep_without_tensorboard_writes_no_events_and_one_that_all_failed_exits_1(tmp_path, capsys):
    configured(tmp_path, "0", "model.emb=4")
    end_of_a_sweep(sweep_config(tmp_path, backends=()))
    assert (tmp_path / "leaderboard.md").exists() and not (tmp_path / "target 2.2").exists()
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    failed = tmp_path / "failed"
    fake_run(failed, "0", ["seed=1"], status="diverged", error="nan")
    with pytest.raises(SystemExit) as stop:
        end_of_a_sweep(sweep_config(failed))
    assert stop.value.code == 1
    assert capsys.readouterr().err == (
        f"error: every member of the sweep failed; their reasons are in {failed}/leaderboard.md\n"
    )


def test_the_experiment_summary_types_each_column_so_numbers_sort_as_numbers(tmp_path):
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    for name, emb, optim in (("0", 16, "sgd"), ("1", 4, "adamw"), ("2", 10, "adamw")):
        configured(tmp_path, name, f"model.emb={emb}", f"optim={optim}")
    end_of_a_sweep(sweep_config(tmp_path))
    events = EventAccumulator(str(tmp_path / "dashboard"))  # the sweep is a view of its own: its summary's run
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    columns = {h.name: h for h in plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos}
    emb = columns["model.emb"]
    assert emb.type == api_pb2.DATA_TYPE_FLOAT64
    assert [v.number_value for v in emb.domain_discrete.values] == [4.0, 10.0, 16.0]  # 4 below 10, as numbers
    assert columns["optim.name"].type == api_pb2.DATA_TYPE_STRING
    assert [v.string_value for v in columns["optim.name"].domain_discrete.values] == ["adamw", "sgd"]


def test_the_cost_panel_has_readable_ticks_and_labels_that_do_not_overlap():
    import itertools

    from matplotlib.text import Text

    costs = {f"emb={e} hidden={h}": (20 + e / 10, 2.15 + e / 10000) for e, h in itertools.product((4, 8), (50, 100))}
    costs["far"] = (44.0, 2.4)
    figure = plots.leaderboard_figure({}, costs, 2.2)
    figure.canvas.draw()
    cost_axes = figure.axes[1]
    assert [t.get_text() for t in cost_axes.get_xticklabels() if t.get_text()]  # 20 to 44 s: inside one decade
    renderer = figure.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, renderer) for a in cost_axes.texts]  # the words, not the leader lines
    assert len(boxes) == 5
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def test_the_legend_lists_seed_groups_in_rank_order(tmp_path, monkeypatch):
    for seed in (1, 2):
        fake_run(tmp_path, f"big_{seed}", ["model.emb=16", f"seed={seed}"], dev_loss=2.0 + seed / 100, **OK)
        fake_run(tmp_path, f"small_{seed}", ["model.emb=4", f"seed={seed}"], dev_loss=2.3 + seed / 100, **OK)
        fake_run(tmp_path, f"mid_{seed}", ["model.emb=8", f"seed={seed}"], dev_loss=2.1 + seed / 100, **OK)
    calls = drawn(monkeypatch)
    write_report(tmp_path)
    assert list(calls[0]["bands"]) == ["emb=16", "emb=8", "emb=4"]  # not name order


def test_seed_groups_reach_tensorboard_as_bands_and_rows(tmp_path):
    from tensorboard.plugins.custom_scalar import layout_pb2

    history = [{"step": 5, "loss/dev": 2.5}]
    for seed, dev in ((1, 2.0), (2, 2.2)):
        config = compose_config("model.emb=16", f"seed={seed}")
        hist = [{"step": 5, "loss/dev": 2.4 + seed / 10}]
        fake_run(tmp_path, f"big_{seed}", ["model.emb=16", f"seed={seed}"], hist, config, dev_loss=dev, **OK)
        config = compose_config("model.emb=4", f"seed={seed}")
        fake_run(tmp_path, f"small_{seed}", ["model.emb=4", f"seed={seed}"], history, config, dev_loss=2.3, **OK)
    end_of_a_sweep(sweep_config(tmp_path))
    root = EventAccumulator(str(tmp_path))
    root.Reload()
    group = EventAccumulator(str(tmp_path / "seeds emb=16"))  # a run of its own: its own colour
    group.Reload()
    mean = [(e.step, round(e.value, 6)) for e in group.Scalars("seeds/emb=16/mean")]
    upper = [(e.step, round(e.value, 6)) for e in group.Scalars("seeds/emb=16/upper")]
    assert mean == [(5, 2.55), (10, 2.1)] and upper == [(5, 2.6), (10, 2.2)]  # mean ± the seeds' spread
    [config] = root.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {chart.title: chart for category in layout.category for chart in category.chart}
    assert layout.category[0].title == f"{tmp_path.name}: seed groups, mean dev loss ± 1 std"
    assert [chart.title for chart in layout.category[0].chart] == [
        "#2 emb=4 (n=2)",
        "#1 emb=16 (n=2)",
        "every group, in one chart",
    ]  # TensorBoard draws them last first: every group, then #1, #2
    bands = [(band.value, band.lower, band.upper) for band in charts["every group, in one chart"].margin.series]
    assert bands == [("seeds/mean", "seeds/lower", "seeds/upper")]  # the tags every group's run shares
    [own] = charts["#1 emb=16 (n=2)"].margin.series
    assert (own.value, own.lower, own.upper) == tuple(f"seeds/emb=16/{p}" for p in ("mean", "lower", "upper"))
    assert [(e.step, round(e.value, 6)) for e in group.Scalars("seeds/mean")] == mean  # in the group's colour
    for directory in {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}:
        tags = set(EventAccumulator(str(directory)).Reload().Tags()["scalars"])
        for chart in charts.values():
            missing = [t for b in chart.margin.series for t in (b.value, b.lower, b.upper) if t not in tags]
            assert len(missing) in (0, 3), (directory, chart.title)  # TensorBoard's rule for "Missing Tags"
    [config] = EventAccumulator(str(tmp_path / "dashboard")).Reload().Tensors("custom_scalars__config__")
    [view] = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0]).category  # the sweep is its own view
    assert [(chart.title, list(chart.multiline.tag)) for chart in view.chart] == [
        ("loss/dev of every run, against the target and the best dev", ["^loss/dev$"])
    ]
    text = root.Tensors("sweep/leaderboard/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("```\n| rank | group") and "emb=16" in text  # the group rows first, once
    assert "sweep/seed_groups/text_summary" not in root.Tags()["tensors"]


def test_a_views_index_holds_what_reading_every_run_gives_and_follows_new_deleted_and_resumed_runs(tmp_path):
    def scanned() -> list[dict]:  # what a refresh reads without an index: every run's files
        (tmp_path / "dashboard.jsonl").unlink()
        runs = view_runs(tmp_path, [])
        return sorted(runs, key=lambda run: run["dir"])

    history = [{"step": 5, "loss/train": 2.5, "loss/dev": 2.6, "lr": 0.1}]
    for seed in ("1", "2"):
        config = compose_config(f"seed={seed}", "model.emb=4")
        fake_run(tmp_path / "sweep", seed, [f"seed={seed}", "model.emb=4"], history, config, dev_loss=2.1, **OK)
    configured(tmp_path / "sweep", "3", "model.emb=16")
    refresh_dashboard(tmp_path, [])
    assert len((tmp_path / "dashboard.jsonl").read_text().splitlines()) == 3  # the first refresh read them all

    later = configured(tmp_path / "single", "0", "model.emb=8")
    refresh_dashboard(tmp_path, [later])  # a run that just ended joins the index, which the refresh reads
    indexed = sorted(view_runs(tmp_path, []), key=lambda run: run["dir"])
    assert [run["dir"] for run in indexed] == sorted([*find_runs(tmp_path / "sweep"), later])
    assert indexed == scanned()
    [first] = [run for run in indexed if run["dir"] == tmp_path / "sweep" / "1"]
    assert first["curve"] == [10, 2, 2.1] and first["hparams"]["model.emb"] == 4  # last step, points, lowest dev

    shutil.rmtree(tmp_path / "sweep" / "3")
    (tmp_path / "single" / "0" / "metrics.json").write_text(json.dumps({**OK, "dev_loss": 1.5}))  # resumed
    refresh_dashboard(tmp_path, [later])
    runs = view_runs(tmp_path, [])
    assert len(runs) == 3 and [run["metrics"]["dev_loss"] for run in runs if run["dir"] == later] == [1.5]
    assert sorted(runs, key=lambda run: run["dir"]) == scanned()
