"""The package's layout holds: imports run one way, and each fact (file names, watch keys, model targets,
defaults) is written in one place."""

import ast
import dataclasses
import re

import pytest
from omegaconf import MISSING, OmegaConf

from hydra_plugins.makemore_optuna.config import OptunaSweeperConf
from makemore import loggers, models, optimizers, schedules, settings
from makemore.fields import defaults_of
from makemore.models import schema_of

from helpers import ROOT

PACKAGE = ROOT / "makemore"
# Each module may import only modules of lower layers (and its own layer's, listed before it): the order in
# which the package is built up, from the errors users see to the command line.
LAYERS = [
    [
        "errors",
        "shell",
        "fields",
        "settings",
        "targets",
        "rundir",
        "hydra_versions",
        "schedules",
        "lock",
        "workers",
        "redact",
        "timeline",
    ],
    ["optimizers.family", "optimizers.adamw", "optimizers.sgd", "optimizers.lion", "optimizers"],
    ["metrics", "dashboard"],
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
    ["config", "derived_configs", "schema", "search", "backprop"],
    ["data"],
    [
        "checkpoint",
        "plots",
        "pictures",
        "provenance",
        "stacked",
        "optimizers.stacked",
        "solo",
        "features",
        "weight_average",
    ],
    ["preflight", "sample", "loop", "evaluate", "mixture"],
    ["cli", "record", "report", "diff", "view", "ensemble"],
    ["train"],
    ["grouping", "population"],
    ["entrypoints", "__main__"],
    [
        "experiments",
        "experiments.startup",
        "experiments.bench",
        "experiments.on_device",
        "experiments.screenshots",
        "experiments.trigram_question",
        "experiments.ensemble_curve",
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
        *("checkpoint_interval", "diverge_above", "use_current_data", "trial", "rerun", "resume", "sweep", "ema_decay"),
        "ensemble_best",
    }
    assert set(settings.RUN_SELECTORS) == {"trial", "rerun", "resume", "sweep"}
    assert not any(re.search(r'"makemore\.(sequence_)?models\.\w+"', text) for text in source.values())
    assert "exclude_keys" not in (ROOT / "conf" / "train.yaml").read_text()


def sources_of_defaults() -> list[tuple[str, object]]:
    """(full key, default) for every key a part of the config defines with a default: the top-level keys, the data
    section, each optimizer and schedule, each built-in model's constructor and each built-in logger's settings."""
    parts = [("", settings.Settings), ("data.", settings.DataSettings)]
    parts += [("optim.", option.family.Config) for option in optimizers.OPTIONS.values()]
    parts += [("schedule.", preset.config) for preset in schedules.SCHEDULES.values()]
    parts += [("model.", schema_of(option.model_class)) for option in models.OPTIONS.values()]
    parts += [(f"logger.{name}.", loggers.settings_of(target)) for name, target in loggers.BACKENDS.items()]
    parts += [("hydra.sweeper.", OptunaSweeperConf)]
    found = []
    for prefix, cls in parts:
        found += [(prefix + key, value) for key, value in defaults_of(cls).items() if value != MISSING]
    return found


def flat_yaml(path) -> dict:
    """A conf/ YAML file's keys as full keys of the run config (a group's own file sits under its group's key)."""
    text = path.read_text()
    node = OmegaConf.to_container(OmegaConf.load(path))
    node.pop("defaults", None)
    group = path.parent.relative_to(ROOT / "conf").as_posix()
    if not group.startswith("hydra"):  # a preset's own hydra: section sets Hydra's settings, not ours
        node.pop("hydra", None)
    if group != "." and "@package _global_" not in text:
        node = {group.replace("/", "."): node}
    return flat(node)


def flat(node: dict, prefix: str = "") -> dict:
    """{'model': {'emb': 10}} -> {'model.emb': 10}, lists kept."""
    found = {}
    for key, value in node.items():
        found.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return found


# A lecture's recipe pins the model it publishes: its model keys stay the lecture's when a default changes.
PINNED = {"experiment": "model."}


def option_defaults(path) -> dict:
    """The `optim` and `schedule` values a conf/ YAML file composes before its own: those of the options its
    defaults list picks (else the tree's: optim=adamw and that optimizer's schedule), as full keys."""
    picks = {"optim": "adamw"}
    for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []):
        for group, option in entry.items() if isinstance(entry, dict) else []:
            picks[group.removeprefix("override ").strip("/")] = option
    optim = optimizers.OPTIONS[picks["optim"]]
    schedule = picks.get("schedule", optim.schedule)
    return flat(
        {"optim": optim.node(picks["optim"])["optim"], "schedule": schedules.SCHEDULES[schedule].node(schedule)}
    )


def test_every_default_is_written_once():
    """The config tree never restates a default, and no code writes one as a keyword or a dict entry."""
    defaults = sources_of_defaults()
    assert {"seed", "optim.lr", "schedule.warmup", "data.fractions", "model.emb", "logger.wandb.mode"} <= {
        key for key, _ in defaults
    }
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        pinned, composed = PINNED.get(path.parent.name), option_defaults(path)
        for key, value in flat_yaml(path).items():
            if key.split(".")[0] in ("optim", "schedule"):  # several options: the one the file composes is judged
                restated = [value] if composed.get(key, MISSING) == value else []
            else:
                restated = [d for k, d in defaults if k == key and d == value]
            assert not restated or (pinned and key.startswith(pinned)), f"{path.name} restates the default {key}"
    for option in models.OPTIONS.values():
        restated = {k: v for k, v in option.preset.items() if defaults_of(schema_of(option.model_class)).get(k) == v}
        assert not restated, f"model={option.name} restates {restated}"
    for name, option in optimizers.OPTIONS.items():
        restated = {k: v for k, v in option.values.items() if defaults_of(option.family.Config).get(k) == v}
        restated |= {k: v for k, v in option.run.items() if defaults_of(settings.Settings).get(k, MISSING) == v}
        assert not restated, f"optim={name} restates {restated}"
    for name, preset in schedules.SCHEDULES.items():
        restated = {k: v for k, v in preset.values.items() if defaults_of(preset.config).get(k) == v}
        assert not restated, f"schedule={name} restates {restated}"
    written = written_values()
    for key, value in [(k, v) for k, v in defaults if v]:  # 0, false, null: "off" values code writes for its own ends
        holders = [where for name, literal, where in written if name == key.rpartition(".")[2] and literal == value]
        assert not holders, f"{key}={value!r} is written again in {holders}"


# Calls whose values are an option's own, checked against that option's class above.
PRESETS = {"register", "Preset"}


def written_values() -> list[tuple[str, object, str]]:
    """(key, value, file) for every keyword argument and dict entry in the package's code that writes a literal;
    not in makemore/experiments, whose benchmarks pin the lectures' recipes as PINNED presets do."""
    found = []
    for path in set(PACKAGE.rglob("*.py")) - set((PACKAGE / "experiments").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            pairs = []
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in PRESETS:
                continue
            if isinstance(node, ast.Call):
                pairs = [(k.arg, k.value) for k in node.keywords if k.arg]
            elif isinstance(node, ast.Dict):
                pairs = [(k.value, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)]
            for name, value in pairs:
                try:
                    found.append((name, ast.literal_eval(value), path.name))
                except ValueError:  # not a literal
                    continue
    return found


def test_every_key_of_the_run_has_an_allowed_range():
    """Each key validate checks carries its range beside it; only a switch or a run selector takes any value."""
    parts = [settings.Settings, settings.DataSettings]
    parts += [option.family.Config for option in optimizers.OPTIONS.values()]
    parts += [preset.config for preset in schedules.SCHEDULES.values()]
    for cls in parts:
        for f in dataclasses.fields(cls):
            free = f.type in ("bool", bool) or f.name == "name" or f.metadata.get("role") == "selects"
            assert free or "range" in f.metadata, f"{cls.__name__}.{f.name} has no allowed range"


def test_the_layout_doc_lists_every_module_in_the_order_it_is_built_up():
    """docs/layout.md names each module once, in LAYERS' order: the order its imports run."""
    text = (ROOT / "docs" / "layout.md").read_text()
    listed = re.findall(r"^      (\S+)\s", text[text.index("    makemore/") : text.index("    hydra_plugins/")], re.M)
    assert listed == [module.replace(".", "/") for layer in LAYERS for module in layer]


def test_every_package_of_the_code_ships_in_the_wheel():
    """pyproject.toml lists the packages setuptools builds: a package left out installs without its modules."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    for init in [*PACKAGE.rglob("__init__.py"), *(ROOT / "hydra_plugins").rglob("__init__.py")]:
        name = ".".join(init.parent.relative_to(ROOT).parts)
        assert f'"{name}"' in pyproject, f"{name} is not in pyproject.toml's packages"
