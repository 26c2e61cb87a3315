"""Sampling from every model type's saved run, and the benchmark at tiny size."""

import itertools
import math
import re
import subprocess
import sys

import pytest
import torch

from makemore import provenance
from makemore.checkpoint import load_model
from makemore.data import Vocab, load_dataset
from makemore.errors import MakemoreError
from makemore.experiments.bench import main as bench_main
from makemore.models import NgramCounts, NgramTable
from makemore.sample import generate, novelty, shares_line
from makemore.sample import main as sample_main

from helpers import FAST, ROOT, run_train


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bigram_count", "trigram_count", "trigram_table", "additive", "mlp"])
def test_sample_cli_works_on_every_model_type(tmp_path, model):
    run_dir = tmp_path / "run"
    assert run_train(run_dir, f"model={model}", *FAST).returncode == 0
    out = tmp_path / "samples.txt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "makemore.sample",
            str(run_dir),
            "-n",
            "30",
            "-t",
            "0.8",
            "-k",
            "5",
            "-s",
            "3",
            "-p",
            "em",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
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
    assert novelty(["ab", "ab", "ab", "b"], {"train": ["ab", "b"], "dev": ["b"], "test": ["c"]}) == {
        "train": 1.0,
        "dev_test": 0.0,
        "new": 0.0,
    }  # in train and dev: counted once, as train
    assert novelty(["c"], {"train": [], "dev": [], "test": ["c"]}) == {"train": 0.0, "dev_test": 1.0, "new": 0.0}
    assert novelty([], {"train": [], "dev": [], "test": []}) == {"train": 0.0, "dev_test": 0.0, "new": 0.0}


def torch_counts():
    import torch

    return torch.tensor([[0.0, 3, 1], [0, 0, 5], [5, 0, 0]])


def test_model_loads_for_sampling_from_a_checkpoint(tmp_path):
    from makemore.data import load_dataset
    from makemore.models import loss_on
    from makemore.train import train_run

    from helpers import compose_config

    metrics = train_run(compose_config("model=additive", *FAST, "logger=none"), tmp_path)
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


def chain(counts: list[list[float]]) -> tuple[NgramCounts, Vocab]:
    """A bigram model over '.', 'a', 'b' with the given counts (row: the previous token)."""
    model = NgramCounts(3, block_size=1, alpha=0.0)
    model.counts.copy_(torch.tensor(counts))
    return model, Vocab((".", "a", "b"))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(temperature=-0.5), "temperature must be a finite number >= 0 (0 is greedy), got -0.5"),
        (dict(temperature=math.nan), "temperature must be a finite number >= 0 (0 is greedy), got nan"),
        (dict(temperature=math.inf), "temperature must be a finite number >= 0 (0 is greedy), got inf"),
        (dict(top_k=0), "top_k must be at least 1, got 0"),
        (dict(prefix="azy"), "prefix has characters not in the vocabulary: 'yz'"),
        (dict(prefix="."), "prefix has characters not in the vocabulary: '.'"),  # the boundary is no character
    ],
)
def test_sampling_refuses_options_it_cannot_honour(options, message):
    model, vocab = chain([[0.0, 3, 1], [0, 0, 5], [5, 0, 0]])
    with pytest.raises(MakemoreError) as refused:
        generate(model, vocab, 1, 5, **options)
    assert str(refused.value) == message


def test_sampling_draws_from_the_model_at_its_temperature():
    model, vocab = chain([[0.0, 3, 1], [0, 0, 5], [5, 0, 0]])  # the first character: a with 3/4, b with 1/4
    assert generate(model, vocab, 1, 0) == []
    for temperature, share_of_a in ((1.0, 3 / 4), (0.5, 9 / 10), (2.0, 3**0.5 / (3**0.5 + 1))):
        firsts = generate(model, vocab, 1, 4000, temperature=temperature, max_len=1, seed=5)
        assert len(firsts) == 4000 and set(firsts) == {"a", "b"}
        assert firsts.count("a") / 4000 == pytest.approx(share_of_a, abs=0.025), temperature  # p^(1/T), renormalised
    assert generate(model, vocab, 1, 50, top_k=2, seed=5) == generate(model, vocab, 1, 50, seed=5)  # k >= choices
    assert set(generate(model, vocab, 1, 200, top_k=1, max_len=1)) == {"a"}


def test_sampling_defaults_and_rows_that_end_at_their_own_length():
    model, vocab = chain([[0.0, 1, 0], [1, 3, 0], [1, 0, 0]])  # . -> a, then a (3/4) or the end: lengths vary
    assert generate(model, vocab, 1, 50) == generate(model, vocab, 1, 50, temperature=1.0, top_k=None, seed=0)
    assert generate(model, vocab, 1, 50) != generate(model, vocab, 1, 50, temperature=2.0)
    lengths = [len(item) for item in generate(model, vocab, 1, 50)]
    assert len(set(lengths)) > 3 and min(lengths) == 1  # each row stops at its own end, not at the first row's
    endless, _ = chain([[0.0, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert generate(endless, vocab, 1, 1, temperature=0) == ["a" * 256]  # the default max_len


def test_a_tiny_temperature_is_greedy_for_any_logits():
    table = NgramTable(3, block_size=1)
    with torch.no_grad():
        table.W.copy_(torch.tensor([[50.0, 60.0, 55.0], [60.0, 50.0, 55.0], [50.0, 55.0, 60.0]]))  # large, positive
    vocab = Vocab((".", "a", "b"))
    assert generate(table, vocab, 1, 3, temperature=1e-307) == generate(table, vocab, 1, 3, temperature=0) == ["a"] * 3


def test_sampling_stops_at_max_len_and_leaves_the_model_in_its_mode():
    model, vocab = chain([[0.0, 1, 0], [0, 1, 0], [1, 0, 0]])  # . -> a -> a -> ...: never ends
    model.train()
    assert generate(model, vocab, 1, 2, temperature=0, max_len=5) == ["aaaaa", "aaaaa"]
    assert model.training
    model.eval()
    assert generate(model, vocab, 1, 1, temperature=0, max_len=3, prefix="ba") == ["baaaa"]
    assert not model.training


@pytest.fixture(scope="module")
def counted_run(tmp_path_factory):
    """A finished bigram-count run (counting takes no steps): a run directory to sample from."""
    from makemore.train import train_run

    from helpers import compose_config

    run_dir = tmp_path_factory.mktemp("counted") / "run"
    train_run(compose_config("model=bigram_count", "logger=none", "progress=false", "samples=0"), run_dir)
    return run_dir


def test_the_sample_command_prints_writes_and_tells_what_is_new(counted_run, tmp_path, capsys):
    out = tmp_path / "samples.txt"
    assert (
        sample_main([str(counted_run), "-n", "7", "-p", "em", "-s", "2", "-t", "0.9", "-k", "20", "-o", str(out)]) == 0
    )
    printed, told = capsys.readouterr()
    samples = printed.splitlines()
    model, vocab, _ = load_model(counted_run / "model.pt")
    assert samples == generate(model, vocab, 1, 7, temperature=0.9, top_k=20, prefix="em", seed=2)
    assert out.read_text(encoding="utf-8") == printed
    shares = novelty(samples, load_dataset(None, 1).words)
    assert told.strip() == (
        f"7 samples: {shares['new']:.0%} new, {shares['train']:.0%} in train, {shares['dev_test']:.0%} in dev/test only"
    )
    assert sample_main([str(counted_run)]) == 0  # the defaults: 20 samples at temperature 1, every token, seed 0
    assert capsys.readouterr().out.splitlines() == generate(model, vocab, 1, 20, temperature=1.0, top_k=None, seed=0)
    assert sample_main([str(counted_run), "-n", "1"]) == 0 and len(capsys.readouterr().out.splitlines()) == 1
    assert sample_main([str(counted_run), "-n", "10", "-k", "1", "-s", "2"]) == 0  # top 1: the likeliest, always
    greedy = capsys.readouterr().out.splitlines()
    assert greedy == generate(model, vocab, 1, 10, temperature=0) and len(set(greedy)) == 1


def test_the_sample_command_documents_itself(capsys):
    with pytest.raises(SystemExit) as done:
        sample_main(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: python -m makemore.sample [-h] [-n COUNT]")
    assert "Sampling: generate items from a model" in usage  # the module's docstring
    for described in ("a run directory holding model.pt", "also write the samples to this file"):
        assert re.search(rf"\s{{2}}{described}\n", usage)  # the argument's help, as written


def test_a_write_that_fails_is_one_line(counted_run, capsys):
    assert sample_main([str(counted_run), "-o", "/dev/full"]) == 1  # a device that is always full
    printed, told = capsys.readouterr()
    assert told == "error: cannot write /dev/full (No space left on device); -o <a file in an existing directory>\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["-n", "0"], "error: --count must be at least 1, got 0"),
        (["-o", "{tmp}"], "error: -o {tmp} is a directory; -o <a file path>"),
        (
            ["-o", "{tmp}/no/such.txt"],
            "error: -o {tmp}/no/such.txt: no directory {tmp}/no; create it first, or write elsewhere",
        ),
        (
            ["-o", "{run}/samples.txt"],
            "error: -o {run}/samples.txt is inside the run directory {run}, whose files no command "
            "changes; write elsewhere",
        ),
        (["-p", "É"], "error: prefix has characters not in the vocabulary: 'É'"),
        (
            ["-o", "{tmp}/sweep/notes.txt"],
            "error: -o {tmp}/sweep/notes.txt would overwrite what a sweep or report wrote in {tmp}/sweep, which no "
            "command changes; write elsewhere",
        ),
        (
            ["-o", "{tmp}/leaderboard.md"],
            "error: -o {tmp}/leaderboard.md would overwrite what a sweep or report wrote in {tmp}, which no command "
            "changes; write elsewhere",
        ),
    ],
)
def test_the_sample_command_refuses_in_one_line(counted_run, tmp_path, capsys, args, message):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}\n")  # a sweep's root
    (tmp_path / "leaderboard.md").write_text("| a report |\n")
    args = [a.format(tmp=tmp_path, run=counted_run) for a in args]
    assert sample_main([str(counted_run), *args]) == 1
    printed, told = capsys.readouterr()
    assert printed == "" and told == message.format(tmp=tmp_path, run=counted_run) + "\n"
    assert sample_main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: no checkpoint at {tmp_path / 'model.pt'}")


def test_shares_are_skipped_when_the_training_data_is_gone_or_changed(tmp_path):
    data = {"path": str(tmp_path / "gone.txt"), "boundary": ".", "fractions": [0.8, 0.1, 0.1], "seed": 42}
    vocab = Vocab((".", "a", "b"))
    run = tmp_path / "old_run"  # recorded before provenance: the vocabulary is all it can compare
    assert shares_line(["ab"], vocab, data, run).startswith(
        f"1 samples; new/in-train shares skipped: the training data can't be read (data file not found: {data['path']}"
    )
    (tmp_path / "gone.txt").write_text("\n".join(["ab", "abc", "ba", "cab"] * 5))
    assert (
        shares_line(["ab"], vocab, data, run)
        == f"1 samples; new/in-train shares skipped: the data file {data['path']} has changed since training"
    )
    assert (
        shares_line(["ab", "zz"], Vocab((".", "a", "b", "c")), data, run)
        == "2 samples: 50% new, 50% in train, 0% in dev/test only"
    )
    items = ["".join(p) for p in itertools.product("ab", repeat=5)]  # 32 distinct items
    (tmp_path / "gone.txt").write_text("\n".join(items))
    seeded = {**data, "seed": 7}  # the split the run trained on, not the default seed's
    train = load_dataset(seeded["path"], 1, ".", (0.8, 0.1, 0.1), 7).words["train"]
    assert (
        shares_line(train, Vocab((".", "a", "b")), seeded, run)
        == f"{len(train)} samples: 0% new, 100% in train, 0% in dev/test only"
    )


def test_shares_are_skipped_when_the_data_changed_by_its_hash_though_its_vocabulary_did_not(tmp_path):
    data_file, run = tmp_path / "words.txt", tmp_path / "run"
    data_file.write_text("\n".join(["ab", "abc", "ba", "cab"] * 5))
    data = {"path": str(data_file), "boundary": ".", "fractions": [0.8, 0.1, 0.1], "seed": 42}
    provenance.write(run, {"data": provenance.data_fingerprint(str(data_file))}, "")
    vocab = Vocab((".", "a", "b", "c"))
    assert shares_line(["ab"], vocab, data, run).startswith("1 samples: ")
    data_file.write_text("\n".join(["ba", "cba", "ab", "bac"] * 5))  # the same characters, other lines
    told = shares_line(["ab"], vocab, data, run)
    assert told.startswith(f"1 samples; new/in-train shares skipped: data {data_file} changed: sha256 ")
    assert told.endswith(" since training")


@pytest.mark.slow
def test_benchmark_smoke(capsys):
    assert bench_main(["--steps", "50", "--repeats", "1", "--quick"]) == 0
    out = capsys.readouterr().out
    for figure in (
        "(a) throughput",
        "model.backward=manual",
        "(b) time to dev",
        "(c) evaluation share",
        "(d) peak memory",
    ):
        assert figure in out
