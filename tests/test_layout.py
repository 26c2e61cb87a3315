"""The package's layout holds: imports run one way, and each fact (file names, watch keys, model targets,
defaults) is written in one place."""

import ast
import dataclasses
import re
import typing

import pytest
from omegaconf import MISSING, OmegaConf

from makemore import schema, settings

from helpers import ROOT, compose_config

PACKAGE = ROOT / "makemore"
# Each module may import only modules of lower layers (and its own layer's, listed before it): the order in
# which the package is built up, from the errors users see to the command line.
LAYERS = [
    ["errors", "shell", "settings", "targets", "rundir", "hydra_versions", "optim", "metrics", "dashboard"],
    ["loggers", "loggers.tensorboard", "loggers.wandb", "loggers.mlflow"],
    [
        "models.registry",
        "models.tables",
        "models.counts",
        "models.table",
        "models.additive",
        "models.mlp",
        "models.wavenet",
        "models.causal",
        "models.recurrent",
        "models.bow",
        "models.transformer",
        "models.build",
        "models.scoring",
        "models",
    ],
    ["config", "schema", "search", "backprop"],
    ["data"],
    ["checkpoint", "plots", "provenance", "stacked", "stacked_optim"],
    ["preflight", "sample", "loop", "ensemble", "evaluate"],
    ["cli", "record", "report", "diff"],
    ["train"],
    ["grouping", "population"],
    ["entrypoints", "__main__"],
    [
        "experiments",
        "experiments.bench",
        "experiments.on_device",
        "experiments.screenshots",
        "experiments.trigram_question",
    ],
]


def imports_of(path) -> set[str]:
    """The makemore modules a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("makemore"):
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "makemore" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("makemore.")]
        found |= {name.removeprefix("makemore.") for name in names}
    return found


def module_name(path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def test_every_module_has_a_layer_and_imports_only_below_it():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}
    order = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    assert set(modules) == set(order), "a new module needs its place in LAYERS"
    for module, path in modules.items():
        for imported in imports_of(path) - {module}:
            same_layer_before = order[imported] == order[module] and (
                LAYERS[order[module]].index(imported) < LAYERS[order[module]].index(module)
            )
            assert order[imported] < order[module] or same_layer_before, f"{module} imports {imported}, above it"


@pytest.mark.parametrize(
    "literal",
    [
        '"metrics.json"',
        '"checkpoint.pt"',
        '"model.pt"',
        '"history.csv"',
        '"samples.txt"',
        '".hydra"',
        '"multirun.yaml"',
    ],
)
def test_each_file_name_is_written_once_in_the_package(literal):
    holders = [p.name for p in PACKAGE.rglob("*.py") if literal in p.read_text()]
    assert holders == ["rundir.py"]


def test_the_watch_keys_and_model_targets_are_written_once():
    source = {p: p.read_text() for p in PACKAGE.rglob("*.py")}
    assert not [p.name for p, text in source.items() if re.search(r'"eval_interval",\s*"log_interval"', text)]
    assert set(settings.WATCH_KEYS) == {  # marked beside each key's definition, in makemore/settings.py
        *("progress", "logger", "device", "threads", "samples", "eval_interval", "log_interval"),
        *("checkpoint_interval", "diverge_above", "use_current_data", "trial", "rerun", "resume", "sweep"),
    }
    assert set(settings.RUN_SELECTORS) == {"trial", "rerun", "resume", "sweep"}
    assert not any(re.search(r'"makemore\.(sequence_)?models\.\w+"', text) for text in source.values())
    assert "exclude_keys" not in (ROOT / "conf" / "train.yaml").read_text()


def yaml_options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def defaults_of(cls) -> dict:
    """A dataclass's defaults, MISSING where it has none."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        else:
            values[f.name] = MISSING
    return values


def assert_one_source(cls, node: dict, where: str) -> None:
    for key, default in defaults_of(cls).items():
        if key in node and default is not MISSING:
            nested = typing.get_type_hints(cls)[key]
            if dataclasses.is_dataclass(schema._unwrap(nested)) and node[key] is not None:
                assert_one_source(schema._unwrap(nested), node[key], f"{where}.{key}")
                continue
            assert node[key] == default, f"{where}.{key}: the dataclass says {default!r}, the YAML {node[key]!r}"


@pytest.mark.parametrize("group", ["optim", "schedule", "data"])  # a model's and a logger's are their classes' own
def test_every_default_of_every_option_has_one_source(group):
    for option in yaml_options(group):
        composed = OmegaConf.to_container(compose_config(f"{group}={option}"))
        node = composed[group]
        if group in schema.OPTIONS:
            cls = schema._option(group, node)
        else:
            cls = schema.Data
        assert_one_source(cls, node, f"{group}={option}")


def test_the_top_level_defaults_have_one_source():
    composed = OmegaConf.to_container(compose_config())
    # target is an interpolation in train.yaml: 2.2 for the built-in names only; the dataclass gives the 2.2
    top = {k: v for k, v in composed.items() if k not in (*schema.SECTIONS, "target")}
    assert_one_source(schema.Settings, top, "train.yaml")
