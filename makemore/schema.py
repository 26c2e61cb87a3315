"""The config schema: a dataclass per config group option (types), the allowed ranges beside them, and `validate`.

Every run's composed config is checked here before anything is created or written, so a bad value ends in one
line naming the key, the value and what is allowed. Types are checked by OmegaConf's structured configs (the
dataclasses below); ranges, allowed names and cross-key rules are the tables under them.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, List

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from makemore import loggers, models
from makemore.errors import MakemoreError
from makemore.models import schema_of, target_of
from makemore.settings import Settings

SECTIONS = ("data", "model", "optim", "schedule", "logger")


@dataclass
class Data:
    path: str = "builtin"
    boundary: str = "."
    fractions: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 42


@dataclass
class UserModel:
    """What every model config holds; a user's own model's other options go to its constructor as they are."""

    _target_: str
    name: str
    block_size: int


@dataclass
class SGD:
    """sgd and full_batch: their lr differs, so each YAML gives its own."""

    name: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass
class AdamW:
    name: str
    lr: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.01


@dataclass
class Constant:
    name: str


@dataclass
class Step:
    name: str
    decay_at: float = 0.5
    gamma: float = 0.1


@dataclass
class Warmup:
    """cosine and linear: a linear warmup over a fraction of the steps, then down to min_factor * lr."""

    name: str
    min_factor: float  # cosine's and linear's differ: each YAML gives its own
    warmup: float = 0.02


@dataclass
class Exponential:
    name: str
    lr_end: float = 1.0


# Each group's options, by the key that names the option; the model group's come from makemore.models' registry.
OPTIONS = {
    "model": ("_target_", {target_of(o.model_class): schema_of(o.model_class) for o in models.OPTIONS.values()}),
    "optim": ("name", {"sgd": SGD, "full_batch": SGD, "adamw": AdamW}),
    "schedule": (
        "name",
        {"constant": Constant, "step": Step, "cosine": Warmup, "linear": Warmup, "exponential": Exponential},
    ),
}


def _positive(v) -> bool:
    return v > 0 and math.isfinite(v)


def _fraction(v) -> bool:
    return 0 <= v < 1


def _one_of(*names: str):
    return lambda v: v in names, "one of " + ", ".join(names)


# key: (test, what is allowed). A test sees a value of the right type; a None where null is allowed skips it.
RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"),
    "steps": (lambda v: v >= 0, "an integer >= 0"),
    "batch_size": (lambda v: v >= 1, "a positive integer, or null for the whole train split"),
    "eval_interval": (lambda v: v >= 1, "a positive integer"),
    "log_interval": (lambda v: v >= 1, "a positive integer"),
    "threads": (lambda v: v >= 1, "a positive integer"),
    "device": _one_of("cpu", "cuda", "mps", "auto"),
    "samples": (lambda v: v >= 0, "an integer >= 0"),
    "target": (_positive, "a positive number, or null for no target"),
    "label_smoothing": (_fraction, "a number in [0, 1)"),
    "checkpoint_interval": (lambda v: v >= 0, "an integer >= 0 (0: no periodic checkpoints)"),
    "trial": (lambda v: v is None or v >= 0, "a trial number >= 0, set by hydra/sweeper=optuna (or null)"),
    "early_stopping": (lambda v: v >= 0, "an integer >= 0: evaluations without a better dev loss (0: off)"),
    "overfit_batch": (lambda v: v >= 0, "an integer >= 0 (0: off; debug=overfit sets 32)"),
    "diverge_above": (_positive, "a positive number of nats, or null to stop only on NaN"),
    "data.path": (lambda v: v != "", "a file path, or builtin"),
    "data.boundary": (
        lambda v: isinstance(v, str) and len(v) == 1 and v not in "\r\n",
        "one character other than a line end, as a string (quote a digit: data.boundary=\"'0'\")",
    ),
    "data.fractions": (
        lambda v: len(v) == 3 and min(v) > 0 and abs(sum(v) - 1) < 1e-6,
        "three positive numbers summing to 1, e.g. [0.8,0.1,0.1]",
    ),
    "data.seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"),
    "model.block_size": (lambda v: v >= 1, "a positive integer"),
    "optim.lr": (_positive, "a positive number"),
    "optim.momentum": (_fraction, "a number in [0, 1)"),
    "optim.weight_decay": (lambda v: v >= 0 and math.isfinite(v), "a number >= 0"),
    "optim.betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9,0.99]"),
    "schedule.decay_at": (lambda v: 0 <= v <= 1, "a fraction of the steps in [0, 1]"),
    "schedule.gamma": (_positive, "a positive number"),
    "schedule.warmup": (_fraction, "a fraction of the steps in [0, 1)"),
    "schedule.min_factor": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "schedule.lr_end": (_positive, "a positive number"),
}


# Checked as typed, before OmegaConf turns them into strings: Hydra reads `data.boundary=0` as the integer 0.
AS_TYPED = {"data.boundary"}


def _cross_checks(cfg: dict) -> None:
    """Rules that span keys."""
    if cfg["model"].get("norm") == "batch" and cfg["batch_size"] is not None and cfg["batch_size"] < 2:
        raise MakemoreError(
            f"batch_size={cfg['batch_size']} is not allowed with model.norm=batch: BatchNorm needs "
            "batches of at least 2; raise batch_size or use model.norm=none"
        )
    if cfg["overfit_batch"] and cfg["batch_size"] is not None:
        raise MakemoreError(
            f"batch_size={cfg['batch_size']} is not allowed with overfit_batch={cfg['overfit_batch']}: "
            "every step trains on that one batch; use batch_size=null (debug=overfit does)"
        )
    built_in = models.registered_class(cfg["model"]["_target_"])
    if hasattr(built_in, "check_options"):  # a model's rules across its own keys live beside it
        built_in.check_options(cfg["model"])


def shown(value: Any) -> str:
    """A value as it would be typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(shown, value)) + "]"
    return str(value)


def _type_words(annotation: Any) -> str:
    """'an integer', 'a number or null', ... for a dataclass field's type."""
    args = typing.get_args(annotation)
    if type(None) in args:
        return _type_words(next(a for a in args if a is not type(None))) + ", or null"
    if typing.get_origin(annotation) in (list, List):
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}[args[0]]
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(annotation, "a group")


def _typed(prefix: str, schema: type, node: Any) -> dict:
    """`node` checked against `schema`: no unknown keys, each value of its field's type. Returns plain values."""
    if not isinstance(node, dict):
        raise MakemoreError(f"{prefix.rstrip('.')}={shown(node)} is not allowed: it must be a group of keys")
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    unknown = [key for key in node if key not in names]
    if unknown:
        raise MakemoreError(
            f"unknown key {prefix}{unknown[0]}; the keys here are {', '.join(prefix + n for n in names)}"
        )
    typed = OmegaConf.structured(schema)
    for name in names:
        if name not in node:
            continue
        value, key = node[name], prefix + name
        if dataclasses.is_dataclass(_unwrap(hints[name])) and value is not None:
            sub = _unwrap(hints[name])
            typed[name] = OmegaConf.merge(OmegaConf.structured(sub), _typed(f"{key}.", sub, value))
            continue
        if _unwrap(hints[name]) is float and type(value) is int:
            value = float(value)  # `target=2` means 2.0 (OmegaConf 2.4 deprecates converting it itself)
        try:
            typed[name] = value  # OmegaConf checks the type on assignment
        except OmegaConfBaseException:
            raise MakemoreError(
                f"{key}={shown(value)} is not allowed: {key} must be {_type_words(hints[name])}"
            ) from None
    try:
        result = OmegaConf.to_container(typed, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise MakemoreError(f"{prefix}{e.key} is missing; add it to the config") from None
    for name in names:
        key, rule = prefix + name, RANGES.get(prefix + name) or _field_rule(schema, name)
        value = node.get(name, result[name]) if key in AS_TYPED else result[name]
        if rule and value is not None and not rule[0](value):
            raise MakemoreError(f"{key}={shown(node.get(name, value))} is not allowed: {key} must be {rule[1]}")
    return result


def _field_rule(schema: type, name: str) -> tuple[typing.Callable[[Any], bool], str] | None:
    """A range written beside its field: `field(metadata={"allowed": (name, ...)})`, or a model's `Annotated`
    constraint (makemore.models.registry.Range), which its schema keeps as `metadata["range"]`."""
    metadata = next(f for f in dataclasses.fields(schema) if f.name == name).metadata
    if "range" in metadata:
        return metadata["range"].test, metadata["range"].words
    return _one_of(*metadata["allowed"]) if "allowed" in metadata else None


def _unwrap(annotation: Any) -> Any:
    """Optional[X] -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation


def _option(group: str, node: Any) -> type:
    """The schema of the option chosen in `group`, from its naming key; any other model is a user's own."""
    key, schemas = OPTIONS[group]
    choice = node.get(key) if isinstance(node, dict) else None
    if group == "model" and isinstance(choice, str) and choice not in schemas:
        return UserModel
    if choice not in schemas:
        raise MakemoreError(
            f"{group}.{key}={shown(choice)} is not allowed: {group}.{key} must be one of {', '.join(schemas)}"
        )
    return schemas[choice]


def _model(node: Any) -> dict:
    """The model group: a built-in model's every key checked; a user's model's own keys passed through. A built-in
    model named by an earlier import path (makemore.sequence_models.RNN) is checked, and built, as its class now."""
    if isinstance(node, dict) and isinstance(node.get("_target_"), str):
        node = {**node, "_target_": models.current_target(node["_target_"])}
    schema = _option("model", node)
    if schema is not UserModel:
        return _typed("model.", schema, node)
    own = {k: v for k, v in node.items() if k not in ("_target_", "name", "block_size")}
    return {**_typed("model.", UserModel, {k: v for k, v in node.items() if k not in own}), **own}


def _loggers(node: Any) -> dict:
    """The logger group: one section per backend, each naming its class by `_target_`; a built-in backend's keys
    checked against its settings (makemore.loggers), a user's logger checked for Logger's methods."""
    if not isinstance(node, dict):
        raise MakemoreError(f"logger={shown(node)} is not allowed: use logger=tensorboard, wandb, mlflow, all or none")
    checked = {}
    for name, section in node.items():
        key = f"logger.{name}"
        target = section.get("_target_") if isinstance(section, dict) else None
        if not isinstance(target, str):
            raise MakemoreError(
                f"{key} has no _target_ (the class that logs); pick a backend with logger={name} "
                f"(built in: {', '.join(loggers.BACKENDS)}) or set {key}._target_=module.Class"
            )
        settings = loggers.settings_of(target)
        rest = {k: v for k, v in section.items() if k != "_target_"}
        if settings is None:
            loggers.check_logger_class(key, target)
            checked[name] = {"_target_": target, **rest}
        else:
            checked[name] = {"_target_": target, **_typed(f"{key}.", settings, rest)}
    return checked


def validate(cfg: DictConfig | dict) -> DictConfig:
    """The config checked against the schema, with schema defaults filled in; a MakemoreError names the first
    problem."""
    if isinstance(cfg, DictConfig):  # without Hydra's own node, which resolves only inside a running job
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except OmegaConfBaseException as e:
        raise MakemoreError(f"{e.full_key} does not resolve: {str(e).splitlines()[0]}") from None
    missing = [s for s in SECTIONS if s not in raw]
    if missing:
        raise MakemoreError(f"the config has no {missing[0]} group; compose it from conf/ (python train.py ...)")
    top = _typed("", Settings, {k: v for k, v in raw.items() if k not in SECTIONS})
    sections = {
        "data": _typed("data.", Data, raw["data"]),
        "logger": _loggers(raw["logger"]),
        "model": _model(raw["model"]),
        **{group: _typed(f"{group}.", _option(group, raw[group]), raw[group]) for group in ("optim", "schedule")},
    }
    order = list(raw) + [k for k in top if k not in raw]
    checked = {key: sections[key] if key in sections else top[key] for key in order}
    _cross_checks(checked)
    return OmegaConf.create(checked)
