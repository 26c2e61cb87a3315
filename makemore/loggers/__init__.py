"""Loggers: where a run's numbers, texts and figures go. One module per backend (TensorBoard, the default;
Weights & Biases; MLflow), each a class with the methods of `Logger`, and its settings as a dataclass beside it.

A backend is chosen by config, lightning-hydra-template's way: `logger` holds one section per backend, each with
the `_target_` of its class and its settings (`logger=wandb` -> `logger.wandb._target_`, `logger.wandb.mode`).
The built-in ones are listed in BACKENDS, which makemore.config registers as the `logger` group's options (their
defaults read from each class's `Settings`) and makemore.schema checks against; a user's own logger is any
importable class with Logger's methods, named by `_target_` in a section of its own
(`+logger.mine._target_=my_package.MyLogger`), its other keys passed to it as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from makemore.errors import MakemoreError
from makemore.targets import import_target


@dataclass(frozen=True)
class RunInfo:
    """What a logger is told of the run it logs (makemore.train.start builds it, one per run)."""

    run_dir: Path
    name: str  # the run's name: its directory's
    sweep: str | None  # its sweep directory's name, for a sweep member
    hparams: dict[str, Any]  # the keys that define what it computed, flattened (makemore.config.experiment_hparams)
    provenance: dict  # where its code, data and environment came from (makemore.provenance)
    run_id: str  # 8 hex digits the run keeps across resume= (its checkpoints hold them): it logs into the same run
    resumed_at: int | None  # a resumed run's step: what it logged after its checkpoint is replaced


class Logger(Protocol):
    """The calls a run makes of each backend, in this order: scalars during training, then at the end text,
    image, summary and target_line, and close (also after a failure)."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def text(self, tag: str, text: str, step: int) -> None: ...

    def image(self, tag: str, image: Any, step: int) -> None:
        """A picture: a numpy array, RGB, height x width x 3, uint8."""

    def summary(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        """The final metrics beside the run's hyperparameters."""

    def target_line(self, target: float, curve: list[tuple[int, float]]) -> None:
        """The dev-loss target, with the run's (step, dev loss) curve."""

    def close(self) -> None: ...


def backend_methods() -> list[str]:
    """The methods a logger class must have: Logger's."""
    return [name for name in vars(Logger) if not name.startswith("_") and callable(getattr(Logger, name))]


class Loggers:
    """Sends every call to each configured backend."""

    def __init__(self, backends: list[Logger]):
        self.backends = backends

    def __getattr__(self, method: str):
        def fan_out(*args, **kwargs):
            for backend in self.backends:
                getattr(backend, method)(*args, **kwargs)

        return fan_out


# The built-in backends by option name (logger=<name>): the `_target_` of each one's class, whose `Settings` dataclass
# holds its keys and defaults. A new backend: its module beside these, and its line here.
BACKENDS = {
    "tensorboard": "makemore.loggers.tensorboard.TensorBoardLogger",
    "wandb": "makemore.loggers.wandb.WandbLogger",
    "mlflow": "makemore.loggers.mlflow.MlflowLogger",
}


def settings_of(target: str) -> type | None:
    """A built-in backend's settings dataclass, by its `_target_`; None for any other class."""
    return import_target(target).Settings if target in BACKENDS.values() else None


def option_node(name: str) -> dict:
    """The `logger` group's option `name` as Hydra composes it: its section, `_target_` first, then the defaults
    of its class's settings."""
    target = BACKENDS[name]
    return {name: {"_target_": target, **dataclasses.asdict(settings_of(target)())}}


def build_loggers(section: dict, run: RunInfo) -> Loggers:
    """Each backend of the `logger` section (checked by makemore.schema), built from its `_target_` with the run
    and its settings; an empty section logs nothing."""
    backends = []
    for settings in section.values():
        settings = dict(settings)
        backends.append(import_target(settings.pop("_target_"))(run, **settings))
    return Loggers(backends)


def preflight(section: dict) -> None:
    """Each built-in backend's own refusal of settings that cannot work here (W&B online without credentials),
    before the run writes anything."""
    for settings in section.values():
        if settings["_target_"] in BACKENDS.values():
            check = getattr(import_target(settings["_target_"]), "preflight", None)
            if check:
                check(dict(settings))


def why_unreachable(url: str, timeout: float, data: bytes | None = None) -> str:
    """Why the server at `url` did not answer a request within `timeout` seconds, or "" if it answered (any HTTP
    status: it is there). Asked before a backend's client, which would wait on a silent server for minutes."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return ""
    except (OSError, ValueError) as error:  # refused, timed out, no such host, not a URL
        reason = getattr(error, "reason", error)
        return str(reason) or type(reason).__name__
    return ""


def writes_tensorboard(section: dict) -> bool:
    """Whether the `logger` section writes TensorBoard events, which the dashboard's view summarises."""
    target = BACKENDS["tensorboard"]
    return any(dict(settings).get("_target_") == target for settings in section.values())


def missing_methods(cls: type) -> list[str]:
    """The Logger methods a class lacks."""
    return [name for name in backend_methods() if not callable(getattr(cls, name, None))]


def check_logger_class(key: str, target: str) -> type:
    """A user's logger class by its `_target_`, refused in one line if it cannot be imported or lacks a method."""
    try:
        cls = import_target(target)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MakemoreError(f"{key}._target_={target} cannot be imported ({reason}); name an importable class") from e
    lacking = missing_methods(cls)
    if lacking:
        raise MakemoreError(
            f"{key}._target_={target} is not a logger: it lacks {', '.join(lacking)} "
            f"(a logger has the methods of makemore.loggers.Logger: {', '.join(backend_methods())})"
        )
    return cls
