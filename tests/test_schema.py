"""The config schema: every preset passes it, bad values are named with what is allowed, null where allowed."""

import pytest
from omegaconf import OmegaConf

from makemore.errors import MakemoreError
from makemore.schema import validate

from helpers import compose_config

PRESETS = [
    [],
    ["optim=sgd"],
    ["optim=full_batch"],
    ["experiment=karpathy_mlp"],
    ["experiment=best"],
    ["experiment=wavenet"],
    ["experiment=lecture3_batchnorm"],
    ["optim=sgd", "schedule=cosine"],
    ["optim=adamw", "schedule=step"],
    ["schedule=linear"],
    ["schedule=exponential"],
    ["logger=all"],
    ["logger=none"],
    *[
        [f"model={m}"]
        for m in ("bigram_count", "trigram_count", "trigram_table", "additive", "wavenet", "rnn", "gru", "transformer")
    ],
]


@pytest.mark.parametrize("overrides", PRESETS, ids=lambda o: " ".join(o) or "defaults")
def test_every_preset_passes_the_schema_unchanged(overrides):
    cfg = compose_config(*overrides)
    checked = OmegaConf.to_container(validate(cfg))
    composed = OmegaConf.to_container(cfg, resolve=True)  # the schema resolves: what is checked is what runs
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
        (["logger=wandb", "logger.wandb=null"], "logger.wandb has no _target_ (the class that logs)"),
        (
            ["logger=wandb", "logger.wandb.mode=loud"],
            "logger.wandb.mode=loud is not allowed: logger.wandb.mode must be one of offline, online, disabled",
        ),
        (["logger=mlflow", "+logger.mlflow.colour=red"], "unknown key logger.mlflow.colour"),
        (
            ["+logger.mine._target_=makemore.errors.MakemoreError"],
            "logger.mine._target_=makemore.errors.MakemoreError is not a logger: it lacks scalars",
        ),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(overrides, message):
    with pytest.raises(MakemoreError) as error:
        validate(compose_config(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_null_target_and_null_ceiling_are_allowed():
    checked = validate(compose_config("target=null", "diverge_above=null"))
    assert checked.target is None and checked.diverge_above is None
