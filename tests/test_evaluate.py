"""makemore.evaluate: a saved model scored without training, its figures the run's own, its record apart from the
run, unseen characters and changed data refused in one line."""

from __future__ import annotations

import json
import math

import pytest

from makemore import evaluate, report
from makemore.errors import MakemoreError
from makemore.train import train_run

from helpers import FAST, compose_config, tree_hashes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two finished runs on a copy of 2,000 names: an MLP (scored in windows) and a transformer (whole items)."""
    from makemore.data import read_items, resolve_path

    root = tmp_path_factory.mktemp("evaluate")
    data = root / "names.txt"
    data.write_text("\n".join(read_items(resolve_path(None))[:2000]), encoding="utf-8")
    runs = {}
    for model in ("mlp", "transformer"):
        cfg = compose_config(f"model={model}", *FAST, "logger=none", "samples=0", f"data.path={data}")
        runs[model] = (root / model, train_run(cfg, root / model))
    return data, runs


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_a_split_of_its_own_data_gives_the_runs_own_figures_to_the_last_digit(trained, model, tmp_path, monkeypatch):
    _, runs = trained
    run_dir, metrics = runs[model]
    before = tree_hashes(run_dir)
    for split in ("train", "dev", "test"):
        score = evaluate.evaluate(run_dir, split)
        assert score.loss == metrics[f"{split}_loss"]
        assert score.bits_per_character == pytest.approx(score.loss / math.log(2), rel=1e-15)
    assert tree_hashes(run_dir) == before  # the run's files are never touched

    monkeypatch.chdir(tmp_path)
    assert evaluate.main([str(run_dir), "--split", "dev", "--json"]) == 0
    [record] = (tmp_path / "outputs" / "evaluations").glob("*/evaluation.json")
    saved = json.loads(record.read_text())
    assert saved["data"] == {"source": "the runs' own data", "split": "dev"}
    assert saved["evaluations"][0]["loss"] == metrics["dev_loss"]


def test_unseen_characters_are_refused_by_name_or_skipped_and_counted(trained, tmp_path, monkeypatch, capsys):
    _, runs = trained
    run_dir, _ = runs["mlp"]
    other = tmp_path / "pokemon.txt"
    other.write_text("pikachu\nmr. mime\nbulbasaur\nfarfetch'd\n", encoding="utf-8")
    with pytest.raises(MakemoreError) as refused:
        evaluate.evaluate(run_dir, "all", other)
    assert str(refused.value) == (
        "2 of 4 items hold characters the model never saw (\" '.\"; '.' is its end-of-item token); pass "
        "--skip-unseen to score the other 2"
    )
    score = evaluate.evaluate(run_dir, "all", other, skip_unseen=True)
    assert (score.items, score.skipped_items, score.unseen, score.characters) == (2, 2, " '.", 8 + 10)
    just_the_two = tmp_path / "two.txt"
    just_the_two.write_text("pikachu\nbulbasaur\n", encoding="utf-8")
    assert evaluate.evaluate(run_dir, "all", just_the_two).loss == score.loss

    monkeypatch.chdir(tmp_path)
    assert evaluate.main([str(run_dir), "--data", str(other)]) == 1
    assert capsys.readouterr().err == f"error: {refused.value}\n"
    assert not (tmp_path / "outputs").exists()  # no record of an evaluation that did not happen


def test_a_changed_data_file_or_a_directory_that_is_no_run_is_refused(trained, tmp_path, monkeypatch, capsys):
    data, runs = trained
    run_dir, _ = runs["mlp"]
    original = data.read_text(encoding="utf-8")
    try:
        data.write_text(original + "\nzyx", encoding="utf-8")
        with pytest.raises(MakemoreError, match=rf"since {run_dir} trained on it.*with --data {data}$"):
            evaluate.evaluate(run_dir, "dev")
    finally:
        data.write_text(original, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert evaluate.main([str(data.parent)]) == 1
    assert capsys.readouterr().err == f"error: {data.parent} is not a run directory; pass one that holds model.pt\n"
    assert report.main(str(data.parent), "nope.txt") == 1
    assert capsys.readouterr().err.endswith(
        "error: data file not found: nope.txt; pass eval_data=<a UTF-8 text file with one item per line>\n"
    )
    assert not (tmp_path / "outputs").exists()
