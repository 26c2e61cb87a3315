"""The config schema, the schedule group, command quoting, and the smaller record fixes, in-process."""

import json
import math
import shlex

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import FAST, compose_config
from makemore.cli import hydra_value, override, train_command
from makemore.data import load_dataset, read_items
from makemore.errors import MakemoreError
from makemore.loop import Diverged
from makemore.models import MLP, eval_rows, loss_on
from makemore.optim import build_optimizer
from makemore.config import upgrade
from makemore.schema import validate
from makemore.train import run

PRESETS = [[], ["optim=sgd"], ["optim=full_batch"], ["experiment=karpathy_mlp"], ["experiment=best"],
           ["experiment=wavenet"], ["experiment=lecture3_batchnorm"],
           ["optim=sgd", "schedule=cosine"], ["optim=adamw", "schedule=step"], ["schedule=linear"],
           ["schedule=exponential"], ["logger=all"], ["logger=none"],
           *[[f"model={m}"] for m in ("bigram_count", "trigram_count", "trigram_table", "additive", "wavenet", "rnn",
                                      "gru", "transformer")]]


@pytest.mark.parametrize("overrides", PRESETS, ids=lambda o: " ".join(o) or "defaults")
def test_every_preset_passes_the_schema_unchanged(overrides):
    cfg = compose_config(*overrides)
    checked = OmegaConf.to_container(validate(cfg))
    composed = OmegaConf.to_container(cfg, resolve=True)  # the schema resolves: what is checked is what runs
    composed["logger"].setdefault("wandb", None)  # the one key the schema fills in
    assert checked == composed


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.block_size=0"], "model.block_size=0 is not allowed: model.block_size must be a positive integer"),
        (["model.block_size=1.5"], "model.block_size=1.5 is not allowed: model.block_size must be an integer"),
        (["optim.lr=-1"], "optim.lr=-1 is not allowed: optim.lr must be a positive number"),
        (["optim.lr=nan"], "optim.lr=nan is not allowed"),
        (["data.boundary=ab"], "data.boundary=ab is not allowed"),
        (["model.norm=group"], "model.norm=group is not allowed: model.norm must be one of none, batch, layer"),
        (["eval_interval=0"], "eval_interval=0 is not allowed: eval_interval must be a positive integer"),
        (["threads=0"], "threads=0 is not allowed"),
        (["diverge_above=-1"], "diverge_above=-1 is not allowed"),
        (["batch_size=0"], "batch_size=0 is not allowed"),
        (["seed=-1"], "seed=-1 is not allowed: seed must be an integer in [0, 2^32)"),
        (["data.seed=abc"], "data.seed=abc is not allowed: data.seed must be an integer"),
        (["model.layers=0"], "model.layers=0 is not allowed"),
        (["model.init=zeros"], "model.init=zeros is not allowed"),
        (["model.dropout=1.5"], "model.dropout=1.5 is not allowed"),
        (["model.emb=-3"], "model.emb=-3 is not allowed"),
        (["model=trigram_count", "model.alpha=-1"], "model.alpha=-1 is not allowed"),
        (["optim=sgd", "schedule.gamma=0"], "schedule.gamma=0 is not allowed"),
        (["schedule=exponential", "schedule.lr_end=0"], "schedule.lr_end=0 is not allowed"),
        (["optim.betas=[0.9]"], "optim.betas=[0.9] is not allowed"),
        (["target=0"], "target=0 is not allowed"),
        (["samples=-1"], "samples=-1 is not allowed"),
        (["+model.colour=red"], "unknown key model.colour"),
        (["model=wavenet", "model.block_size=6"], "block_size must be a power of two"),
        (["model=transformer", "model.n_head=5"], "n_embd must be a multiple of n_head"),
        (["model=gru", "model.cell=lstm"], "model.cell=lstm is not allowed: model.cell must be one of rnn, gru"),
        (["model=rnn", "+model.colour=red"], "unknown key model.colour"),
        (["logger=wandb", "logger.wandb=null"], "logger.backends lists wandb but logger.wandb is missing"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(overrides, message):
    with pytest.raises(MakemoreError) as error:
        validate(compose_config(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_null_target_and_null_ceiling_are_allowed():
    checked = validate(compose_config("target=null", "diverge_above=null"))
    assert checked.target is None and checked.diverge_above is None


def lrs(*overrides, steps=100):
    cfg = compose_config(*overrides, f"steps={steps}")
    _, lr_at = build_optimizer(torch.nn.Linear(2, 2), cfg.optim, cfg.schedule, steps)
    return [lr_at(step) for step in range(steps)]


def test_each_schedule_gives_the_lr_it_promises():
    assert lrs("optim=sgd") == [0.1] * 50 + [0.1 * 0.1] * 50  # the lectures': x0.1 at half
    assert lrs("optim=full_batch", "schedule=constant") == [50.0] * 100
    cosine = lrs("optim=sgd", "schedule=cosine")  # warmup 2 steps, then a half cosine to 0.05 x lr
    assert cosine[:2] == [0.05, 0.1]
    assert cosine[2 + 49] == pytest.approx(0.1 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 49 / 98))))
    adamw = lrs()  # the default: adamw 0.01 with warmup and a half cosine to 0.05 x lr
    assert adamw[:2] == [0.005, 0.01] and adamw[-1] == pytest.approx(0.01 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 97 / 98))))
    linear = lrs("schedule=linear")  # adamw 0.01: warmup 2 steps, then a straight line to 0
    assert linear[:2] == [0.005, 0.01] and linear[2 + 24] == pytest.approx(0.01 * (1 - 24 / 98))
    exponential = lrs("optim=sgd", "schedule=exponential", "optim.lr=0.001", "schedule.lr_end=1.0", steps=4)
    assert exponential == pytest.approx([0.001, 0.01, 0.1, 1.0])
    assert lrs("optim=sgd", "schedule=exponential", "optim.lr=0.001", "schedule.lr_end=1.0", steps=2) == [0.001, 1.0]


def test_any_schedule_runs_with_any_optimizer(tmp_path, few_names):
    for i, overrides in enumerate([("optim=sgd", "schedule=cosine"), ("optim=adamw", "schedule=step")]):
        metrics = run(compose_config(*overrides, *FAST, "logger=none", few_names), tmp_path / str(i))
        assert metrics["status"] == "ok"


def test_a_config_saved_by_an_earlier_version_is_upgraded():
    old = OmegaConf.create({"model": {"name": "mlp", "kind": "mlp", "block_size": 3},
                            "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
                                      "schedule": "step", "decay_at": 0.5, "gamma": 0.1}})
    new = upgrade(old)
    assert dict(new.model) == {"name": "mlp", "block_size": 3, "_target_": "makemore.models.MLP"}
    assert new.schedule == {"name": "step", "decay_at": 0.5, "gamma": 0.1}
    assert dict(new.optim) == {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}


texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_printed_overrides_survive_bash_and_hydra(text):
    word = override("rerun", text)
    [as_bash_passes_it] = shlex.split(word)  # POSIX shell quoting, as bash reads the pasted word
    assert OverridesParser.create().parse_override(as_bash_passes_it).value() == text.replace("${", "\\${")


def test_plain_values_are_printed_plainly():
    assert train_command("rerun", "outputs/2026-11-23/10-00-00_mlp_abc") == "python train.py rerun=outputs/2026-11-23/10-00-00_mlp_abc"
    assert train_command("rerun", "out/1_model=mlp,steps=2") == "python train.py 'rerun=\"out/1_model=mlp,steps=2\"'"
    assert hydra_value("123") == '"123"'  # a number-looking path stays a string


def test_diverging_to_a_huge_finite_loss_is_divergence(tmp_path, few_names):
    with pytest.raises(Diverged, match="above diverge_above=100"):
        run(compose_config("optim=sgd", "optim.lr=1e6", "steps=300", "log_interval=1", "progress=false",
                           "logger=none", few_names), tmp_path / "sgd")
    with pytest.raises(Diverged, match="above diverge_above=100"):
        run(compose_config("optim=full_batch", "log_interval=1", "progress=false", "logger=none", few_names),
            tmp_path / "full_batch")


def test_lecture_2s_randn_start_is_not_divergence(tmp_path, few_names):
    metrics = run(compose_config("experiment=karpathy_mlp", "steps=200", "log_interval=1", "eval_interval=200",
                                 "progress=false", "logger=none", "checkpoint_interval=0", few_names), tmp_path)
    first = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok" and first["status"] == "ok"
    with open(tmp_path / "history.csv") as f:
        assert 20 < float(f.readlines()[1].split(",")[1]) < 100  # ~27 nats at the first step, under the ceiling


def test_infinite_losses_are_written_as_valid_json(tmp_path):
    run(compose_config("model=trigram_count", "model.alpha=0", "logger=none", "progress=false"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert metrics["dev_loss"] is None and metrics["test_loss"] is None and "infinite" in metrics["note"]
    assert metrics["status"] == "ok" and math.isfinite(metrics["train_loss"])


def test_evaluation_chunks_are_sized_from_the_vocabulary():
    assert eval_rows(27) == 65536
    rows = 256 * 2**20 // (20_001 * 3 * 4)  # 256 MiB over three float32 rows of V: logits, softmax, gradient
    assert eval_rows(20_001) == rows == 1118 and isinstance(eval_rows(20_001), int)
    assert eval_rows(30_000_000) == 1  # a chunk holds at least one row, whatever the vocabulary
    model = MLP(50, 2, emb=3, hidden=4)
    X, Y = torch.randint(50, (5000, 2)), torch.randint(50, (5000,))
    whole = torch.nn.functional.cross_entropy(model.eval()(X), Y).item()
    assert loss_on(model, X, Y, 50) == pytest.approx(whole, rel=1e-6)


def test_cr_only_line_ends_split_items(tmp_path):
    path = tmp_path / "mac.txt"
    path.write_bytes(b"anna\rbob\r\rcarl\r\ndave\n")
    assert read_items(path) == ["anna", "bob", "carl", "dave"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_files_are_named_as_such(tmp_path, encoding):
    path = tmp_path / "names.txt"
    path.write_bytes("emma\nolivia\nava\n".encode(encoding))
    with pytest.raises(MakemoreError, match="is UTF-16; re-save it as UTF-8"):
        load_dataset(str(path), 3)


def test_weight_decay_falls_on_weights_and_embeddings_only():
    from makemore.optim import param_groups

    model = MLP(27, 3, norm="batch", layers=2)
    decayed, kept = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and kept["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decayed["params"]) == [
        "embedding.weight", "hidden.0.weight", "hidden.3.weight", "output.weight"]  # every matrix
    assert sorted(names[id(p)] for p in kept["params"]) == [
        "hidden.1.bias", "hidden.1.weight", "hidden.4.bias", "hidden.4.weight", "output.bias"]  # norms, biases
    schedule = compose_config().schedule
    decaying = build_optimizer(model, compose_config("optim.weight_decay=0.1").optim, schedule, 10)[0]
    assert [g["weight_decay"] for g in decaying.param_groups] == [0.1, 0.0]
    undecayed = build_optimizer(model, compose_config("optim.weight_decay=0").optim, schedule, 10)[0]
    assert [g["weight_decay"] for g in undecayed.param_groups] == [0.0]  # not AdamW's own default of 0.01


def test_optimizers_take_their_hyperparameters_from_the_config():
    adamw = compose_config("optim=adamw", "optim.betas=[0.5,0.6]").optim
    sgd = compose_config("optim=sgd", "optim.momentum=0.7").optim
    schedule = compose_config().schedule
    group = build_optimizer(MLP(27, 3), adamw, schedule, 10)[0].param_groups[0]
    assert group["betas"] == (0.5, 0.6) and group["lr"] == adamw.lr
    group = build_optimizer(MLP(27, 3), sgd, schedule, 10)[0].param_groups[0]
    assert group["momentum"] == 0.7 and group["lr"] == sgd.lr


def test_full_batch_is_200_steps_of_lr_50_on_the_whole_split():
    cfg = validate(compose_config("model=trigram_table", "optim=full_batch"))
    assert (cfg.batch_size, cfg.steps, cfg.optim.lr, cfg.schedule.name) == (None, 200, 50.0, "constant")


@pytest.mark.slow
def test_history_and_time_to_target_are_recorded(tmp_path):
    metrics = run(compose_config("steps=2000", "eval_interval=500", "log_interval=250", "progress=false",
                                 "logger=none"), tmp_path)
    with open(tmp_path / "history.csv") as f:
        rows = [line.strip().split(",") for line in f]
    assert rows[0] == ["step", "loss/train", "loss/dev", "lr"]
    assert [int(r[0]) for r in rows[1:]] == list(range(250, 2001, 250))
    assert [bool(r[2]) for r in rows[1:]] == [s % 500 == 0 and s < 2000 for s in range(250, 2001, 250)]
    dev = {int(r[0]): float(r[2]) for r in rows[1:] if r[2]}
    first_below = min(step for step, loss in dev.items() if loss < 2.2)
    assert metrics["step_to_target"] == first_below and 0 < metrics["seconds_to_target"] < metrics["train_seconds"]
