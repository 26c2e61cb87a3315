"""The config schema: `validate` checks a run's config against each part's own dataclass.

Every run's composed config is checked here before anything is created or written, so a bad value ends in one
line naming the key, the value and what is allowed. The keys, types, defaults and ranges are written beside the
code they configure (makemore.settings, makemore.optimizers, makemore.schedules, each model's constructor, each
logger's settings); types are checked by OmegaConf's structured configs, ranges by the `Range` beside each field,
and the rules across keys below.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, List

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from makemore import loggers, models, optimizers
from makemore.errors import MakemoreError
from makemore.fields import POSITIVE, field_range, ranged
from makemore.models import schema_of, target_of
from makemore.schedules import SCHEDULES
from makemore.settings import DataSettings, Settings

SECTIONS = ("data", "model", "optim", "schedule", "logger")


@dataclass
class UserModel:
    """What every model config holds; a user's own model's other options go to its constructor as they are."""

    _target_: str
    name: str
    block_size: int = ranged(POSITIVE)


# Each group's options, by the key that names the option; the model group's come from makemore.models' registry.
OPTIONS = {
    "model": ("_target_", {target_of(o.model_class): schema_of(o.model_class) for o in models.OPTIONS.values()}),
    "optim": ("name", {name: option.family.Config for name, option in optimizers.OPTIONS.items()}),
    "schedule": ("name", {name: preset.config for name, preset in SCHEDULES.items()}),
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


def on_command_line(value: Any) -> str:
    """A value as it would be typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(on_command_line, value)) + "]"
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
        raise MakemoreError(f"{prefix.rstrip('.')}={on_command_line(node)} is not allowed: it must be a group of keys")
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
                f"{key}={on_command_line(value)} is not allowed: {key} must be {_type_words(hints[name])}"
            ) from None
    try:
        result = OmegaConf.to_container(typed, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise MakemoreError(f"{prefix}{e.key} is missing; add it to the config") from None
    for name in names:
        key, allowed = prefix + name, field_range(schema, name)
        value = node.get(name, result[name]) if key in AS_TYPED else result[name]
        if allowed and value is not None and not allowed.test(value):
            raise MakemoreError(
                f"{key}={on_command_line(node.get(name, value))} is not allowed: {key} must be {allowed.words}"
            )
    return result


def _unwrap(annotation: Any) -> Any:
    """Optional[X] (or X | None) -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return args[0] if union and len(args) == 1 else annotation


def _option(group: str, node: Any) -> type:
    """The schema of the option chosen in `group`, from its naming key; any other model is a user's own."""
    key, schemas = OPTIONS[group]
    choice = node.get(key) if isinstance(node, dict) else None
    if group == "model" and isinstance(choice, str) and choice not in schemas:
        return UserModel
    if choice not in schemas:
        raise MakemoreError(
            f"{group}.{key}={on_command_line(choice)} is not allowed: {group}.{key} must be one of {', '.join(schemas)}"
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


def _optim(node: Any) -> dict:
    """The optim group: a built-in optimizer's keys checked against its config; a user's own family, named by
    `_target_` (a subclass of makemore.optimizers.Optimizer), against its own Config."""
    target = node.get("_target_") if isinstance(node, dict) else None
    if not isinstance(target, str):
        return _typed("optim.", _option("optim", node), node)
    family = optimizers.user_family(target)
    return {"_target_": target, **_typed("optim.", family.Config, {k: v for k, v in node.items() if k != "_target_"})}


def _loggers(node: Any) -> dict:
    """The logger group: one section per backend, each naming its class by `_target_`; a built-in backend's keys
    checked against its settings (makemore.loggers), a user's logger checked for Logger's methods."""
    if not isinstance(node, dict):
        raise MakemoreError(
            f"logger={on_command_line(node)} is not allowed: use logger=tensorboard, wandb, mlflow, all or none"
        )
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
        "data": _typed("data.", DataSettings, raw["data"]),
        "logger": _loggers(raw["logger"]),
        "model": _model(raw["model"]),
        "optim": _optim(raw["optim"]),
        "schedule": _typed("schedule.", _option("schedule", raw["schedule"]), raw["schedule"]),
    }
    order = list(raw) + [k for k in top if k not in raw]
    checked = {key: sections[key] if key in sections else top[key] for key in order}
    _cross_checks(checked)
    return OmegaConf.create(checked)
