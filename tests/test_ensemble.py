"""makemore.ensemble and makemore.mixture: runs of different families mixed, the loss equal to a direct computation
of the averaged probabilities, the record and its rescore, greedy weights chosen on dev only, bad input refused in
one line with nothing written."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from makemore import ensemble, mixture, provenance, report
from makemore.checkpoint import load_model
from makemore.data import build_examples, build_vocab, read_items, resolve_path, split_items
from makemore.errors import MakemoreError
from makemore.models import build_model
from makemore.train import train_run

from helpers import FAST, compose_config, tree_hashes

FAMILIES = ("mlp", "gru", "wavenet")  # windows, whole items, windows of another block_size


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three runs of different families on a copy of 2,000 names, and an MLP on another 2,000."""
    root = tmp_path_factory.mktemp("ensemble")
    names = read_items(resolve_path(None))
    data, other = root / "names.txt", root / "other.txt"
    data.write_text("\n".join(names[:2000]), encoding="utf-8")
    other.write_text("\n".join(names[2000:4000]), encoding="utf-8")
    runs = {}
    for name, path, model in (*((f, data, f) for f in FAMILIES), ("other", other, "mlp")):
        cfg = compose_config(f"model={model}", *FAST, "logger=none", "samples=0", f"data.path={path}")
        train_run(cfg, root / name)
        runs[name] = root / name
    return runs


def averaged_by_hand(run_dirs, split: str, weights) -> float:
    """-log of the weighted mean probability of each next token, every model scored on windows of its block_size."""
    total = None
    for run_dir, weight in zip(run_dirs, weights):
        model, vocab, config = load_model(run_dir / "model.pt")
        items = read_items(resolve_path(config["data"]["path"]))
        words = split_items(items, tuple(config["data"]["fractions"]), config["data"]["seed"])[split]
        X, Y = build_examples(words, vocab, config["model"]["block_size"])
        with torch.no_grad():
            p = torch.softmax(model(X).double(), 1)[torch.arange(len(Y)), Y]
        total = weight * p if total is None else total + weight * p
    return -total.log().mean().item()


def test_three_families_mix_into_the_averaged_probabilities_and_a_record(trained, tmp_path, monkeypatch, capsys):
    runs = [trained[f] for f in FAMILIES]
    before = {run: tree_hashes(run) for run in runs}
    monkeypatch.chdir(tmp_path)
    assert ensemble.main([str(run) for run in runs]) == 0
    [directory] = (tmp_path / "outputs" / "ensembles").iterdir()
    record = json.loads((directory / "ensemble.json").read_text())
    for split in ("train", "dev", "test"):
        assert record["losses"][split] == pytest.approx(averaged_by_hand(runs, split, [1 / 3] * 3), abs=1e-9)
    assert [r["model"] for r in record["runs"]] == list(FAMILIES)
    assert [r["model_sha256"] for r in record["runs"]] == [provenance.sha256_of(run / "model.pt") for run in runs]
    assert [r["weight"] for r in record["runs"]] == [1 / 3] * 3
    metrics = json.loads((directory / "metrics.json").read_text())
    assert (
        metrics["dev_loss"]
        == record["losses"]["dev"]
        < min(json.loads((r / "metrics.json").read_text())["dev_loss"] for r in runs)
    )
    out = capsys.readouterr().out
    [line] = [line.split() for line in out.splitlines() if line.startswith("ensemble ")]
    assert line == ["ensemble", "1.000", *(f"{record['losses'][split]:.4f}" for split in ("train", "dev", "test"))]
    assert f"rescore it with: python -m makemore.ensemble --rescore {directory.relative_to(tmp_path)}" in out
    assert {run: tree_hashes(run) for run in runs} == before  # the runs' files are never touched

    # a row on the leaderboard of outputs, and a run of the dashboard: its losses and HParams read back
    [row] = [row for row in report.write_report(tmp_path / "outputs") if "ensemble of 3" in row["run"]]
    assert row["dev"] == f"{metrics['dev_loss']:.4f}" and row["rank"] == 1
    assert row["rerun"] == f"python -m makemore.ensemble --rescore {directory.relative_to(tmp_path)}"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(directory))
    events.Reload()
    assert events.Scalars("loss/dev")[0].value == pytest.approx(metrics["dev_loss"], rel=1e-6)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    )
    assert start.session_start_info.hparams["model.name"].string_value == "ensemble"
    index = [json.loads(line) for line in (tmp_path / "outputs" / "dashboard.jsonl").read_text().splitlines()]
    assert [entry["hparams"]["model.name"] for entry in index] == ["ensemble"]

    # a rescore scores the same runs again, to the last digit, and writes nothing
    written = tree_hashes(tmp_path / "outputs")
    assert ensemble.main(["--rescore", str(directory.relative_to(tmp_path))]) == 0
    assert "rescore verdict: reproduced" in capsys.readouterr().out
    assert tree_hashes(tmp_path / "outputs") == written


def test_greedy_weights_are_chosen_on_dev_and_never_lose_to_the_best_run(trained, tmp_path, monkeypatch):
    runs = [trained[f] for f in FAMILIES]
    members = mixture.load_members(runs)
    weights = mixture.mixture_weights(members, "greedy")
    assert weights.sum().item() == pytest.approx(1)
    picks = [
        n for n in range(1, mixture.GREEDY_ROUNDS + 1) if ((weights * n) - (weights * n).round()).abs().max() < 1e-9
    ]
    assert picks and (weights > 0).sum() > 1  # pick counts over the picks of the best round; here a real mixture
    losses = mixture.mixture_losses(members, weights)
    assert losses["dev"] <= min(m.metrics["dev_loss"] for m in members) + 1e-12
    assert losses["test"] == pytest.approx(averaged_by_hand(runs, "test", weights.tolist()), abs=1e-9)
    # test never chooses: the same dev probabilities with any test probabilities give the same weights
    for member in members:
        member.probabilities["test"] = torch.rand_like(member.probabilities["test"])
    assert torch.equal(mixture.mixture_weights(members, "greedy"), weights)


def test_greedy_selection_takes_the_best_member_first_and_stops_at_its_best_round():
    good, bad = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64), torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    assert mixture.greedy_weights(torch.stack([bad, good])).tolist() == [0.0, 1.0]
    first, second = torch.tensor([0.9, 0.1], dtype=torch.float64), torch.tensor([0.1, 0.9], dtype=torch.float64)
    assert mixture.greedy_weights(torch.stack([first, second])).tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    "given, message",
    [
        (["mlp"], "error: an ensemble needs at least two runs, got 1; pass more run directories"),
        (
            ["mlp", "nothere"],
            "error: no run directory {nothere}; pass the directories of finished runs (outputs/<date>/<run>)",
        ),
        (["mlp", "mlp"], "error: {mlp} is given twice; pass each run once (--weighting greedy weighs them)"),
        (
            ["mlp", "other"],
            "error: {other} and {mlp} were trained on different data (path: {other_data} against {data}); "
            "ensemble runs of one data file and split",
        ),
    ],
)
def test_bad_input_is_refused_in_one_line_and_writes_nothing(trained, given, message, tmp_path, monkeypatch, capsys):
    paths = {name: str(trained.get(name, tmp_path / name)) for name in given}
    monkeypatch.chdir(tmp_path)
    assert ensemble.main([paths[name] for name in given]) == 1
    root = trained["mlp"].parent
    expected = message.format(**paths, data=root / "names.txt", other_data=root / "other.txt")
    assert capsys.readouterr().err.strip() == expected
    assert not (tmp_path / "outputs").exists()


def test_a_rescore_refuses_a_run_whose_model_is_not_the_one_scored(trained, tmp_path, monkeypatch, capsys):
    copies = {name: tmp_path / name for name in ("mlp", "wavenet")}
    for name, copy in copies.items():
        shutil.copytree(trained[name], copy)
    monkeypatch.chdir(tmp_path)
    assert ensemble.main([str(copy) for copy in copies.values()]) == 0
    [directory] = (tmp_path / "outputs" / "ensembles").iterdir()
    shutil.copy(trained["gru"] / "model.pt", copies["wavenet"] / "model.pt")
    with pytest.raises(MakemoreError, match=r"wavenet/model.pt is not the model the ensemble scored \(sha256 "):
        ensemble.rescore(directory)


def test_the_ensemble_curve_scores_the_runs_ended_so_far_and_fits_a_plus_b_over_k(trained, tmp_path, capsys):
    from makemore.experiments import ensemble_curve

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    for order, family in enumerate(FAMILIES):  # they end in this order
        shutil.copytree(trained[family], sweep / family)
        os.utime(sweep / family / "metrics.json", (1e9 + order, 1e9 + order))
    assert ensemble_curve.main([str(sweep), "--out", str(tmp_path / "curve.png")]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line[:4] in ("| 1 ", "| 2 ", "| 3 ")]
    assert [row[1] for row in rows] == list(FAMILIES) and (tmp_path / "curve.png").stat().st_size > 0
    mixed = mixture.mixture_losses(
        mixture.load_members([trained[f] for f in FAMILIES[:2]], ("dev",)),
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    assert rows[1][4] == f"{mixed['dev']:.4f}"
    exact = [{"ensemble dev": 1.9 + 0.03 / k} for k in range(1, 7)]
    assert ensemble_curve.fit(exact) == pytest.approx((1.9, 0.03), abs=1e-12)


def test_a_split_of_windows_is_scored_once_per_distinct_context_to_the_same_probabilities():
    items = read_items(resolve_path(None))
    words = split_items(items, (0.8, 0.1, 0.1), 42)["dev"]
    cfg = compose_config("model=mlp")
    torch.manual_seed(0)
    vocab = build_vocab(items)
    model = build_model(cfg.model, vocab.size).eval()
    X, Y = build_examples(words, vocab, cfg.model.block_size)
    with torch.no_grad():
        every_row = torch.softmax(model(X).double(), -1)[torch.arange(len(Y)), Y]
    assert torch.equal(mixture.target_probabilities(model, X, Y, vocab.size), every_row)
