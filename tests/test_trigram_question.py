"""The trigram experiment on a tiny corpus: the converged table is the count model; additivity costs loss."""

import pytest

from makemore.data import load_dataset
from makemore.experiments.trigram_question import render, run_experiment

from helpers import write_tiny_corpus


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    corpus = write_tiny_corpus(tmp_path_factory.mktemp("trigram"))
    return run_experiment(load_dataset(str(corpus), 2), with_framework=False, max_steps=5000)


def test_converged_table_matches_the_counts_on_seen_contexts(result):
    assert result["converged_kl"] < 1e-3
    assert result["table_converged_train"] == pytest.approx(result["counts_mle_train"], abs=1e-3)
    assert result["unseen_rows_moved"] == 0.0 and result["seen_rows_moved"] > 0


def test_additive_converges_no_lower_than_the_table(result):
    assert result["additive_converged_train"] >= result["table_converged_train"] - 1e-6


def test_report_is_written_from_the_numbers(result):
    text = render(result, seconds=1.0)
    assert f"{result['additive_converged_train']:.4f}" in text and f"{result['table_converged_train']:.4f}" in text
    assert "trigram_count α=0.1" in text
