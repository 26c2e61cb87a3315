"""What must hold before a run writes a byte, in-process: the memory a run needs (bytes worked out by hand), the
model's output on one batch, the device, the split; and the run-directory helpers those checks lean on."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from makemore import preflight
from makemore.errors import MakemoreError
from makemore.rundir import ended_metrics, finished, is_watch_key, read_overrides, write_json, written_by_a_run
from makemore.schema import validate

from helpers import compose_config

NAMES_TOKENS = 228146  # the built-in names' characters plus one end per name


@pytest.mark.parametrize(
    "overrides, parts",
    [
        # 11,897 parameters x 16 bytes; 228,146 tokens x (3 + 1) x 32; (256 + 65,536 rows) x 27 x 12
        ([], {"weights and optimizer": 190352, "examples": 29202688, "logits": 21316608}),
        # 19,683 x 16; 228,146 x 3 x 32; (int(228,146 x 0.8) + 1 + 65,536) x 27 x 12: the whole split at once
        (
            ["model=trigram_table", "batch_size=null"],
            {"weights and optimizer": 314928, "examples": 21902016, "logits": 80369172},
        ),
        # 204,544 x 16 + a 16-entry buffer x 4; 228,146 x 17 x 32
        (["model=transformer"], {"weights and optimizer": 3272768, "examples": 124111424, "logits": 21316608}),
    ],
)
def test_the_memory_a_run_needs_is_counted_part_by_part(overrides, parts):
    assert preflight.memory_needed(validate(compose_config(*overrides)), 27, NAMES_TOKENS) == parts


@pytest.mark.parametrize("free, refused", [(None, False), (51_000_000, True), (63_000_000, True), (64_000_000, False)])
def test_a_run_is_refused_above_80_percent_of_the_free_memory(monkeypatch, free, refused):
    monkeypatch.setattr(preflight, "available_memory", lambda: free)
    cfg = validate(compose_config())  # needs 50,709,648 bytes: refused below 63,387,060 free
    if not refused:
        preflight.check_memory(cfg, 27, NAMES_TOKENS)
        return
    with pytest.raises(MakemoreError) as told:
        preflight.check_memory(cfg, 27, NAMES_TOKENS)
    gib = f"{free / 2**30:,.1f}"
    assert str(told.value) == (
        f"model mlp needs about 0.0 GiB to train but only {gib} GiB is free (weights and optimizer 0.0, examples "
        "0.0, logits 0.0 GiB); the examples take most of it: use a smaller data file or a shorter model.block_size"
    )


def test_the_free_memory_is_read_from_the_kernel(monkeypatch, tmp_path):
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemAvailable:")).split()[1])
    assert abs(preflight.available_memory() - kib * 1024) < 2**30  # read a moment apart
    meminfo = tmp_path / "meminfo"
    monkeypatch.setattr(preflight, "open", lambda path: open(meminfo), raising=False)
    meminfo.write_text("MemTotal:       16384 kB\nMemAvailable:    2048 kB\nHugepagesize:    2048 kB\n")
    assert preflight.available_memory() == 2048 * 1024
    meminfo.write_text("MemTotal:       16384 kB\n")  # an old kernel: no MemAvailable
    assert preflight.available_memory() is None


class ExtraClass(nn.Module):
    def __init__(self, vocab_size, block_size):
        super().__init__()
        self.out = nn.Embedding(vocab_size, vocab_size + 1)

    def forward(self, context):
        return self.out(context[:, -1])


class Integers(ExtraClass):
    def forward(self, context):
        return context[:, -1:].expand(-1, 27)


class NotATensor(ExtraClass):
    def forward(self, context):
        return [0.0] * 27


class NaNs(ExtraClass):
    def forward(self, context):
        return torch.full((len(context), 27), math.nan)


class Masked(ExtraClass):
    def forward(self, context):
        return torch.full((len(context), 27), -math.inf)


class Broken(ExtraClass):
    def forward(self, context):
        raise ValueError("bad\nsecond line")


class BadItems(nn.Module):
    def __init__(self, vocab_size, block_size):
        super().__init__()
        self.out = nn.Embedding(vocab_size, vocab_size)

    def forward(self, context):
        return self.out(context[:, -1])

    def forward_items(self, tokens):
        return self.out(tokens)[:, :-1]


class Frozen(nn.Module):
    def __init__(self, vocab_size, block_size):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(vocab_size, vocab_size), requires_grad=False)

    def forward(self, context):
        return self.table[context[:, -1]]


def with_model(model_class: str, block_size: int = 3):
    cfg = compose_config()
    cfg.model = OmegaConf.create(
        {"_target_": f"test_preflight.{model_class}", "name": "mine", "block_size": block_size}
    )
    return cfg


@pytest.mark.parametrize(
    "model, message",
    [
        ("ExtraClass", "forward(context[2, block_size]) returned shape [2, 28], not [2, 27] (a logit per vocabulary "
                       "entry, V=27); fix its output layer's size to vocab_size"),
        ("Integers", "forward(context[2, block_size]) returned torch.int64 logits; return floating-point logits"),
        ("NotATensor", "forward(context[2, block_size]) returned a list, not a tensor of logits [2, 27]; return the "
                       "logits tensor"),
        ("NaNs", "forward(context[2, block_size]) returned NaN or +inf logits at initialisation; check its "
                 "initialisation and forward"),
        ("Broken", "forward(context[2, block_size]) failed (ValueError: bad); fix the model's forward"),
        ("BadItems", "forward_items(tokens[2, block_size]) returned shape [2, 2, 27], not [2, 3, 27] (a logit per "
                     "vocabulary entry, V=27); fix its output layer's size to vocab_size"),
        ("Frozen", "has no trainable parameter, so gradient descent cannot change it; register its weights as "
                   "nn.Parameter (or nn.Embedding, nn.Linear, ...)"),
    ],
)  # fmt: skip
def test_a_model_is_checked_on_one_batch_before_training(model, message):
    with pytest.raises(MakemoreError) as refused:
        preflight.check_model(with_model(model).model, 27)
    prefix = f"model mine (test_preflight.{model})"
    assert str(refused.value) == f"{prefix}{'' if model == 'Frozen' else ':'} {message}"


@pytest.mark.parametrize("overrides", [[], ["model=bigram_count", "model.alpha=0"], ["model=gru"], ["model=wavenet"]])
def test_the_models_that_keep_the_contract_pass(overrides):
    preflight.check_model(validate(compose_config(*overrides)).model, 27)  # counts at alpha 0: empty until counted
    preflight.check_model(with_model("Masked").model, 27)  # -inf logits are probabilities of 0, not an error


@pytest.mark.parametrize(
    "cuda, mps, auto", [(True, True, "cuda"), (False, True, "mps"), (True, False, "cuda"), (False, False, "cpu")]
)
def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, auto):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert preflight.pick_device("auto") == torch.device(auto)
    assert preflight.pick_device("cpu") == torch.device("cpu")
    for name, present in (("cuda", cuda), ("mps", mps)):
        if present:
            assert preflight.pick_device(name) == torch.device(name)
        else:
            with pytest.raises(MakemoreError, match=rf"^device={name} but .* is not available here; use device=cpu"):
                preflight.pick_device(name)


def test_mps_is_a_device_the_schema_takes():
    assert validate(compose_config("device=mps")).device == "mps"


def test_prepare_checks_the_split_and_returns_what_it_read(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("anna\nbob\n")
    with pytest.raises(MakemoreError, match=r"^2 items are too few to split \[0.8, 0.1, 0.1\]"):
        preflight.prepare(compose_config(f"data.path={path}"))
    cfg, items, vocab = preflight.prepare(compose_config())
    assert len(items) == 32033 and vocab.size == 27 and cfg.model.name == "mlp" and cfg.eval_interval == 150


def test_the_run_directory_helpers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert (finished(run), ended_metrics(run)) == (False, None)
    write_json(run / "metrics.json", {"status": "interrupted"})
    assert (finished(run), ended_metrics(run)) == (False, None)
    write_json(run / "metrics.json", {"status": "ok", "dev_loss": 2.0})
    assert finished(run) and ended_metrics(run) == {"status": "ok", "dev_loss": 2.0}
    assert (run / "metrics.json").read_text() == '{\n  "status": "ok",\n  "dev_loss": 2.0\n}\n'  # readable as written
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json"]  # the temporary file was renamed
    with pytest.raises(ValueError):
        write_json(run / "metrics.json", {"dev_loss": math.nan})  # JSON has no NaN
    assert finished(run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- model=mlp\n- seed=3\n")
    assert read_overrides(run) == ["model=mlp", "seed=3"]
    (run / ".hydra" / "overrides.yaml").write_text("model: mlp\n")
    with pytest.raises(ValueError, match="holds no list of overrides"):
        read_overrides(run)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    (tmp_path / "leaderboard.md").write_text("|\n")
    assert written_by_a_run(run / "samples.txt") == run and written_by_a_run(sweep / "x.txt") == sweep
    (tmp_path / "notes.txt").write_text("mine\n")
    assert written_by_a_run(tmp_path / "leaderboard.md") == tmp_path and written_by_a_run(tmp_path / "x") is None
    assert written_by_a_run(tmp_path / "notes.txt") is None  # a file of the user's own, outside any run
    assert [is_watch_key(k) for k in ("logger.wandb.mode", "progress=false", "+samples=3", "seed", "model.emb")] == [
        True, True, True, False, False,
    ]  # fmt: skip
