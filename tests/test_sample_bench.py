"""Sampling from every model type's saved run, and the benchmark at tiny size."""

import subprocess
import sys

import pytest
import torch

from conftest import FAST, ROOT, run_train
from makemore.bench import main as bench_main
from makemore.checkpoint import load_model
from makemore.data import Vocab
from makemore.models import NgramCounts
from makemore.sample import generate, novelty


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bigram_count", "trigram_count", "trigram_table", "additive", "mlp"])
def test_sample_cli_works_on_every_model_type(tmp_path, model):
    run_dir = tmp_path / "run"
    assert run_train(run_dir, f"model={model}", *FAST).returncode == 0
    out = tmp_path / "samples.txt"
    result = subprocess.run(
        [sys.executable, "-m", "makemore.sample", str(run_dir), "-n", "30", "-t", "0.8", "-k", "5", "-s", "3",
         "-p", "em", "-o", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    samples = result.stdout.splitlines()
    assert len(samples) == 30 and all(s.startswith("em") for s in samples)
    assert out.read_text().splitlines() == samples
    assert "new" in result.stderr and "in train" in result.stderr and "dev/test" in result.stderr


def test_sampling_options_behave():
    vocab = Vocab((".", "a", "b"))
    model = NgramCounts(3, block_size=1, alpha=0.0)
    model.counts.copy_(torch_counts())
    greedy = generate(model, vocab, 1, 5, temperature=0)
    assert greedy == ["ab"] * 5  # '.'->a (3 of 4), a->b (always), b->'.'
    for tiny in (1e-40, 1e-300):  # as good as greedy, not NaN
        assert generate(model, vocab, 1, 5, temperature=tiny) == greedy
    first = generate(model, vocab, 1, 20, seed=1)
    assert first == generate(model, vocab, 1, 20, seed=1) and first != generate(model, vocab, 1, 20, seed=2)
    assert set(generate(model, vocab, 1, 50, top_k=1)) == {"ab"}
    shares = novelty(["ab", "b", "zz", "ab"], {"train": ["ab"], "dev": ["b"], "test": []})
    assert shares == {"train": 0.5, "dev_test": 0.25, "new": 0.25}


def torch_counts():
    import torch

    return torch.tensor([[0.0, 3, 1], [0, 0, 5], [5, 0, 0]])


def test_model_loads_for_sampling_from_a_checkpoint(tmp_path):
    from conftest import compose_config
    from makemore.data import load_dataset
    from makemore.models import loss_on
    from makemore.train import run

    metrics = run(compose_config("model=additive", *FAST, "logger=none"), tmp_path)
    model, vocab, config = load_model(tmp_path / "model.pt")
    assert config["model"]["name"] == "additive" and not model.training and vocab.size == 27
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())  # the trained weights, not a fresh init
    dev = load_dataset(None, 2)
    assert loss_on(model, dev.X["dev"], dev.Y["dev"], 27) == metrics["dev_loss"]


def test_the_prefix_is_the_context_sampling_continues_from():
    vocab = Vocab((".", "a", "b"))
    model = NgramCounts(3, block_size=1, alpha=0.0)
    model.counts.copy_(torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]))  # . -> a -> b -> .
    assert generate(model, vocab, 1, 3, temperature=0) == ["ab"] * 3
    assert generate(model, vocab, 1, 3, temperature=0, prefix="b") == ["b"] * 3  # after b comes the end
    assert generate(model, vocab, 1, 3, temperature=0, prefix="a") == ["ab"] * 3  # after a comes b, then the end


@pytest.mark.slow
def test_benchmark_smoke(capsys):
    assert bench_main(["--steps", "50", "--repeats", "1", "--quick"]) == 0
    out = capsys.readouterr().out
    for figure in ("(a) throughput", "model.backward=manual", "(b) time to dev", "(c) evaluation share",
                   "(d) peak memory"):
        assert figure in out
