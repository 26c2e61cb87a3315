"""The config helpers conf/ leans on: run and member names, resolvers, flattening and the upgrade of old configs."""

import json
import os
import re
import warnings

import pytest
from omegaconf import OmegaConf

from makemore import config
from makemore.config import (
    compose_train_config,
    flatten,
    job_log,
    member_name,
    record_dir,
    register_resolvers,
    run_name,
    safe_dirname,
    upgrade,
)
from makemore.rundir import ended_metrics
from makemore.schema import validate
from makemore.settings import settings_node

from helpers import ROOT


def test_every_resolver_conf_uses_is_registered():
    texts = [path.read_text() for path in (ROOT / "conf").rglob("*.yaml")] + [str(settings_node())]
    used = {m for text in texts for m in re.findall(r"\$\{(\w+):", text)}
    ours = used - {"now"}  # Hydra's own
    assert ours == set(config.RESOLVERS)
    for name in ours:
        OmegaConf.clear_resolver(name)
    register_resolvers()
    resolved = OmegaConf.create(
        {
            "a": "${uid:}",
            "c": "${run_dir:null,fresh}",
            "d": "${run_dir:old,fresh}",
            "e": "${names_target:builtin,2.2}",
            "f": "${names_target:my.txt,2.2}",
        }
    )
    assert re.fullmatch(r"[0-9a-f]{6}", resolved.a) and resolved.a == OmegaConf.create({"a": "${uid:}"}).a
    assert (resolved.c, resolved.d, resolved.e, resolved.f) == ("fresh", "old", 2.2, None)
    assert all(OmegaConf.has_resolver(name) for name in ours)
    register_resolvers()  # again: a no-op, not a clash


@pytest.mark.parametrize(
    "text, name",
    [
        ("model=mlp,optim.lr=0.1", "model=mlp,optim.lr=0.1"),
        ("data.path=/my data/x.txt", "data.path=-my-data-x.txt"),
        ("  ", "defaults"),
        ("/lead", "lead"),
        ("a" * 130, "a" * 120),
        ("Xavier=MLP", "Xavier=MLP"),  # capitals kept
    ],
)
def test_safe_dirname_keeps_what_a_directory_name_can_hold(text, name):
    assert safe_dirname(text) == name


def test_a_single_run_is_named_by_its_model_and_what_it_changes():
    overrides = ["model=mlp", "model.emb=10", "progress=false", "+seed=3", "data.path=/x y", "logger=none", "flag"]
    assert run_name("mlp", overrides) == "mlp_emb:10_s3_path:-x-y"
    assert run_name("mlp", []) == "mlp"
    assert run_name("mlp", ["data.path=a=b=c", "model.init=Xavier"]) == "mlp_path:a-b-c_init:Xavier"
    assert run_name("mlp", ["data.path=/x/"]) == "mlp_path:-x"  # no trailing dash
    assert run_name("mlp", ["optim=sgd", "optim.lr=0.1"]) == "mlp_sgd_lr:0.1"  # a group's choice by its option
    assert run_name("mlp", ["model.dropout=0.1", "optim.dropout=2"]) == "mlp_model.dropout:0.1_optim.dropout:2"
    assert run_name("mlp", ["model.emb=10"] * 40) == ("mlp" + "_model.emb:10" * 40)[:120]


def test_a_sweep_member_is_named_by_what_its_sweep_varies(tmp_path):
    overrides = ["model.emb=4", "steps=10", "model.hidden=20", "progress=false"]
    assert member_name(str(tmp_path), overrides, 3) == "emb=4 steps=10 hidden=20 #3"  # no multirun.yaml
    multirun = {
        "hydra": {
            "overrides": {"task": ["model.emb=4,8", "steps=10"]},
            "sweeper": {"params": {"model.hidden": "10,20"}},
        }
    }
    (tmp_path / "multirun.yaml").write_text(OmegaConf.to_yaml(multirun))
    assert member_name(str(tmp_path), overrides, 3) == "emb=4 hidden=20"  # every member's values are unique
    (tmp_path / "multirun.yaml").write_text(
        OmegaConf.to_yaml({"hydra": {"overrides": {"task": ["seed=1,2", "model=mlp,gru"]}, "sweeper": {}}})
    )
    assert member_name(str(tmp_path), ["seed=2", "+steps=5", "model=gru"], 0) == "s2 gru"
    (tmp_path / "multirun.yaml").write_text(
        OmegaConf.to_yaml({"hydra": {"overrides": {"task": ["seed=1,1", "steps=range(1,3)"]}, "sweeper": {}}})
    )
    assert member_name(str(tmp_path), ["seed=1", "steps=2"], 3) == "s1 steps=2 #3"  # values that may repeat
    assert member_name(str(tmp_path), ["seed=1", "steps=2", "trial=7"], 7) == "t7 s1 steps=2"  # an Optuna trial
    drawn = ["model.emb=10", "optim.lr=0.013737845955327985", "trial=3", "seed=43"]  # its number tells it apart
    assert member_name(str(tmp_path / "no record"), drawn, 9) == "t3 emb=10 lr=0.01374 s43"


def test_a_run_that_already_has_a_record_is_not_recorded_again(tmp_path):
    assert record_dir(None, str(tmp_path)) == ".hydra"
    assert record_dir(str(tmp_path), str(tmp_path)) is None  # resume=
    (tmp_path / ".hydra").mkdir()
    assert record_dir(None, str(tmp_path)) == ".hydra"  # an empty .hydra/ is no record
    (tmp_path / ".hydra" / "config.yaml").write_text("{}")
    assert record_dir(None, str(tmp_path)) is None


@pytest.mark.parametrize(
    "status, ended",
    [("ok", True), ("diverged", True), ("pruned at step 5", True), ("interrupted", False), (None, False)],
)
def test_only_an_ended_member_keeps_its_log_untouched(tmp_path, status, ended):
    if status:
        (tmp_path / "metrics.json").write_text(json.dumps({"status": status, "dev_loss": 2.0}))
    assert (ended_metrics(tmp_path) == {"status": status, "dev_loss": 2.0}) == ended
    assert ended_metrics(tmp_path) is None or ended
    assert job_log(str(tmp_path), "train") == (os.devnull if ended else str(tmp_path / "train.log"))


def test_flatten_gives_hparams_scalars_under_dotted_keys():
    nested = {
        "model": {
            "emb": 10,
            "dropout": 0.1,
            "name": "mlp",
            "bias": True,
            "fractions": [0.8, 0.2],
            "init": {"gain": None},
        },
        "seed": 3,
    }
    assert flatten(nested) == {
        "model.emb": 10,
        "model.dropout": 0.1,
        "model.name": "mlp",
        "model.bias": True,
        "model.fractions": "[0.8, 0.2]",
        "model.init.gain": None,
        "seed": 3,
    }
    assert flatten({}) == {} and flatten({"a": 1}, "p.") == {"p.a": 1}


def test_an_old_config_is_upgraded_and_a_current_one_left_alone():
    old = OmegaConf.create(
        {
            "model": {"kind": "mlp", "emb": 10},
            "optim": {
                "name": "sgd",
                "lr": 0.1,
                "schedule": "step",
                "decay_at": 0.5,
                "gamma": 0.1,
                "warmup": 0,
                "min_factor": 0.0,
                "lr_end": 1.0,
            },
        }
    )
    upgraded = OmegaConf.to_container(upgrade(old))
    assert upgraded == {
        "model": {"_target_": "makemore.models.mlp.MLP", "emb": 10},
        "optim": {"name": "sgd", "lr": 0.1},
        "schedule": {"name": "step", "decay_at": 0.5, "gamma": 0.1, "warmup": 0, "min_factor": 0.0, "lr_end": 1.0},
    }
    current = {"model": {"_target_": "makemore.models.mlp.MLP"}, "optim": {"name": "sgd"}, "schedule": {"name": "step"}}
    assert OmegaConf.to_container(upgrade(OmegaConf.create(current))) == current
    for before, now in [  # where earlier versions kept the built-in models; a user's own class is left alone
        ("makemore.models.MLP", "makemore.models.mlp.MLP"),
        ("makemore.sequence_models.RNN", "makemore.models.recurrent.RNN"),
        ("makemore.sequence_models.Transformer", "makemore.models.transformer.Transformer"),
        ("my_model.LastCharacter", "my_model.LastCharacter"),
    ]:
        assert upgrade(OmegaConf.create({"model": {"_target_": before}})).model._target_ == now
    typed = validate(compose_train_config("model=gru", "model._target_=makemore.sequence_models.RNN"))
    assert typed.model._target_ == "makemore.models.recurrent.RNN" and typed.model.cell == "gru"  # checked as RNN
    assert OmegaConf.to_container(upgrade(OmegaConf.create({}))) == {}
    both = {
        "optim": {"schedule": "odd"},
        "schedule": {"name": "step"},
    }  # already moved: the new key wins, nothing moves
    assert OmegaConf.to_container(upgrade(OmegaConf.create(both))) == both


def test_an_old_logger_list_becomes_sections_that_validate_and_keep_their_settings():
    wandb = {"project": "p", "entity": None, "group": None, "tags": [], "mode": "online"}
    old = OmegaConf.create({"logger": {"backends": ["tensorboard", "wandb"], "wandb": wandb}})
    assert OmegaConf.to_container(upgrade(old)) == {
        "logger": {
            "tensorboard": {"_target_": "makemore.loggers.tensorboard.TensorBoardLogger"},
            "wandb": {"_target_": "makemore.loggers.wandb.WandbLogger", **wandb, "init_timeout": 30.0},  # a newer key
        }
    }
    none = upgrade(OmegaConf.create({"logger": {"backends": [], "wandb": None}}))
    assert OmegaConf.to_container(none) == {"logger": {}}
    saved = OmegaConf.to_container(compose_train_config(), resolve=True)
    saved["logger"] = {"backends": ["wandb"], "wandb": wandb}
    assert validate(upgrade(OmegaConf.create(saved))).logger.wandb.mode == "online"  # a rerun of it runs


def test_the_config_is_composed_as_hydra_1_3_composes_it_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # without version_base, Hydra warns and falls back to its 1.1 behaviour
        assert compose_train_config("model=mlp").model.name == "mlp"


def test_a_config_saved_by_an_earlier_version_is_upgraded():
    old = OmegaConf.create(
        {
            "model": {"name": "mlp", "kind": "mlp", "block_size": 3},
            "optim": {
                "name": "sgd",
                "lr": 0.1,
                "momentum": 0.0,
                "weight_decay": 0.0,
                "schedule": "step",
                "decay_at": 0.5,
                "gamma": 0.1,
            },
        }
    )
    new = upgrade(old)
    assert dict(new.model) == {"name": "mlp", "block_size": 3, "_target_": "makemore.models.mlp.MLP"}
    assert new.schedule == {"name": "step", "decay_at": 0.5, "gamma": 0.1}
    assert dict(new.optim) == {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}


def test_uid_is_cached_in_the_config_so_a_launchers_workers_resolve_the_parents_sweep_directory(monkeypatch):
    for name in config.RESOLVERS:
        OmegaConf.clear_resolver(name)
    register_resolvers()
    parent = OmegaConf.create({"dir": "sweeps/${uid:}", "resume": "${run_dir:null,fresh}"})
    resolved = parent.dir
    monkeypatch.setattr(config, "PROCESS_ID", "abcdef")  # a worker process has an id of its own
    worker = OmegaConf.create({"dir": "sweeps/${uid:}", "resume": "${run_dir:null,fresh}"})
    OmegaConf.copy_cache(from_config=parent, to_config=worker)  # what Hydra does for each sweep job
    assert worker.dir == resolved != "sweeps/abcdef"
    assert OmegaConf.create({"dir": "sweeps/${uid:}"}).dir == "sweeps/abcdef"  # a config of its own: its own id


def test_an_overrides_key_is_what_stands_before_its_first_equals_sign():
    assert [config._key(o) for o in ("Xavier=1", "+model.emb=a=b", "~seed", "data.path=x=y")] == [
        "Xavier", "model.emb", "seed", "data.path",
    ]  # fmt: skip
