"""A sweep member's config derived from another of its shape (makemore.derived_configs) is the config Hydra composes
for it, key for key, Hydra's own node included; an unknown key is refused as composing refuses it."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from makemore.derived_configs import ComposeOncePerShape
from makemore.hydra_versions import VERSION_BASE

from helpers import ROOT

MEMBERS = [  # a grid's members, two shapes of a group sweep, and overrides that compose the slow way
    ["seed=42", "optim.lr=0.01", "model.emb=4"],
    ["seed=43", "optim.lr=0.03", "model.emb=10"],
    ["seed=44", "optim.lr=3e-3", "model.emb=10"],
    ["model=wavenet", "seed=42"],
    ["model=wavenet", "seed=7"],
    ["model=gru", "seed=7"],
    ["model=gru", "seed=8", "steps=30"],
    ["model=gru", "seed=9", "steps=40"],
    ["+extra=1", "seed=1"],
    ["+extra=2", "seed=2"],
    ["seed=1", "data.fractions=[0.5,0.25,0.25]"],
    ["seed=2", "data.fractions=[0.6,0.2,0.2]"],
    ["samples=null", "seed=3"],
    ["samples=4", "seed=4"],
]


@pytest.fixture
def loader_and_master():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), **VERSION_BASE):
        master = compose("train", overrides=["hydra.job.chdir=false"], return_hydra_config=True)
        assert str(master.hydra.sweep.dir)  # resolved (now:, uid:) and cached, as a sweep's is before it launches
        yield GlobalHydra.instance().config_loader(), master


def test_a_derived_member_config_is_the_composed_one(loader_and_master):
    loader, master = loader_and_master
    composed = [loader.load_sweep_config(master, overrides) for overrides in MEMBERS]
    once = ComposeOncePerShape(loader, master)
    derived = [once(master, overrides) for overrides in MEMBERS]
    for overrides, fresh, made in zip(MEMBERS, composed, derived):
        assert OmegaConf.to_yaml(made) == OmegaConf.to_yaml(fresh), overrides
        assert OmegaConf.get_cache(made) == OmegaConf.get_cache(fresh) != {}  # resolved once, as the sweep's own
        assert OmegaConf.is_struct(made) and not OmegaConf.is_readonly(made.hydra)
        assert made.hydra.job.override_dirname == fresh.hydra.job.override_dirname
    assert len(once.templates) == 5  # the grid, wavenet, gru, samples=...: the rest were composed
    for overrides, made in zip(MEMBERS, derived):  # the launcher asks again for what the sweeper checked
        again = once(master, overrides)
        assert OmegaConf.to_yaml(again) == OmegaConf.to_yaml(made) and again is not made  # its own copy to change
        assert OmegaConf.get_cache(again) == OmegaConf.get_cache(made)


def test_an_unknown_key_is_refused_as_composing_refuses_it_every_time(loader_and_master):
    loader, master = loader_and_master
    once = ComposeOncePerShape(loader, master)
    with pytest.raises(ConfigCompositionException) as composing:
        loader.load_sweep_config(master, ["seed=1", "no_such_key=1"])
    for _ in range(2):  # a shape that failed leaves no template behind
        with pytest.raises(ConfigCompositionException) as deriving:
            once(master, ["seed=2", "no_such_key=2"])
        assert str(deriving.value) == str(composing.value).replace("=1", "=2")
    assert not once.templates
