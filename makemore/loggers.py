"""Loggers: TensorBoard (the default) and Weights & Biases, behind one small fan-out interface."""

from __future__ import annotations

import os
from pathlib import Path

from makemore.config import flatten
from makemore.errors import MakemoreError
from makemore.rundir import is_watch_key


class TensorBoardLogger:
    """Event files in the run's own directory, so `tensorboard --logdir outputs` shows one run per directory."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def figure(self, tag: str, figure, step: int) -> None:
        self.writer.add_figure(tag, figure, step)

    def summary(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        # add_hparams would open a sub-run; writing the session summaries here keeps HParams on this run. The
        # experiment summary (which columns TensorBoard shows) is left to the sweep: see write_hparams_experiment.
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        _, session_start, session_end = hparams_summaries(hparams, metrics)
        self.writer.file_writer.add_summary(session_start)
        self.writer.file_writer.add_summary(session_end)
        self.scalars(step, metrics)

    def close(self) -> None:
        self.writer.close()


def experiment_hparams(config: dict, counted: bool) -> dict:
    """The keys that define what a run computed, flattened; a counting run took no steps and used no optimizer."""
    hparams = {k: v for k, v in flatten(config).items() if not is_watch_key(k)}
    if counted:
        hparams = {
            k: v
            for k, v in hparams.items()
            if not k.startswith(("optim.", "schedule.", "batch_size", "label_smoothing", "early_stopping"))
        }
        hparams.update({"steps": 0, "optim.name": "none (counted)"})
    return hparams


# The metrics every run logs beside its HParams, in the order a user ranks by.
HPARAMS_METRICS = (
    "loss/dev",
    "loss/train",
    "loss/test",
    "run/best_dev_loss",
    "run/params",
    "run/train_seconds",
    "run/target_met",
    "run/step_to_target",
)


def write_target_line(directory: Path, target: float, last_step: int) -> None:
    """A pseudo-run `target` whose `loss/dev` is the target from step 0 to last_step: TensorBoard draws it as
    a level line in the dev-loss chart beside the runs' curves."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(directory / "target")) as writer:
        for step in (0, last_step):
            writer.add_scalar("loss/dev", target, step)


def hparam_domain(values: list):
    """The HParams domain of a key's values: numbers as numbers (sorted and drawn in numeric order), booleans,
    or strings; None where the runs mix kinds."""
    from tensorboard.plugins.hparams import summary_v2

    distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
    if distinct and all(isinstance(v, bool) for v in distinct):
        return summary_v2.Discrete(distinct)
    if distinct and all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct):
        return summary_v2.Discrete(sorted(float(v) for v in distinct))
    if distinct and all(isinstance(v, str) for v in distinct):
        return summary_v2.Discrete(distinct)
    return None


def write_hparams_experiment(sweep_dir: Path, values: dict[str, list]) -> None:
    """An experiment summary at a sweep's root: `tensorboard --logdir <sweep>` opens HParams on the keys the
    members differ in (`values`: each key's values across the members, in column order) and the metrics, not
    on the constants every run shares. Typed domains make TensorBoard sort and draw numbers as numbers."""
    from tensorboard.plugins.hparams import summary_v2
    from torch.utils.tensorboard import SummaryWriter

    experiment = summary_v2.hparams_config_pb(
        [summary_v2.HParam(k, hparam_domain(v)) for k, v in values.items()],
        [summary_v2.Metric(m) for m in HPARAMS_METRICS],
    )
    with SummaryWriter(str(sweep_dir)) as writer:
        writer.file_writer.add_summary(experiment)


class WandbLogger:
    """A real wandb run; offline unless logger.wandb.mode=online or WANDB_MODE says otherwise."""

    def __init__(self, run_dir: Path, cfg, config: dict, name: str, run_id: str | None = None):
        try:
            import wandb
        except ImportError:
            raise MakemoreError("logger=wandb needs the wandb package; pip install wandb") from None
        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(cfg.tags or []),
            mode=os.environ.get("WANDB_MODE", cfg.mode),
            dir=str(run_dir),
            name=name,
            id=run_id,
            resume="allow" if run_id else None,
            config=config,
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.run.log({tag: self.wandb.Html(f"<pre>{text}</pre>")}, step=step)

    def figure(self, tag: str, figure, step: int) -> None:
        self.run.log({tag: self.wandb.Image(figure)}, step=step)

    def summary(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        self.scalars(step, metrics)
        self.run.summary.update(metrics)

    def close(self) -> None:
        if self.run.settings.mode == "offline":  # an online run's files/ get these from W&B itself
            write_readable_files(Path(self.run.dir), dict(self.run.config), dict(self.run.summary))
        self.run.finish()  # every job finishes its run, or a multirun waits on it forever


def write_readable_files(files: Path, config: dict, summary: dict) -> None:
    """An offline run's config and summary as W&B writes them into an online run's files/: config.yaml (each key
    as `{value: ...}`) and wandb-summary.json, so they can be read without W&B's binary log."""
    import json

    import yaml

    files.mkdir(parents=True, exist_ok=True)
    readable = {key: {"value": value} for key, value in config.items() if not key.startswith("_")}
    (files / "config.yaml").write_text(yaml.safe_dump(readable, sort_keys=False), encoding="utf-8")
    plain = {key: value for key, value in summary.items() if isinstance(value, int | float | str | bool)}
    (files / "wandb-summary.json").write_text(json.dumps(plain, indent=2, default=str) + "\n", encoding="utf-8")


class Loggers:
    """Sends every call to each configured backend."""

    def __init__(self, backends: list):
        self.backends = backends

    def __getattr__(self, method: str):
        def fan_out(*args, **kwargs):
            for backend in self.backends:
                getattr(backend, method)(*args, **kwargs)

        return fan_out


def build_loggers(cfg, run_dir: Path, config: dict, name: str, wandb_id: str | None = None, purge_step=None) -> Loggers:
    """The backends listed in cfg.backends (tensorboard, wandb); an empty list logs nothing."""
    backends = []
    for backend in cfg.backends:
        if backend == "tensorboard":
            backends.append(TensorBoardLogger(run_dir, purge_step))
        elif backend == "wandb":
            backends.append(WandbLogger(run_dir, cfg.wandb, config, name, wandb_id))
        else:
            raise MakemoreError(f"unknown logger backend {backend!r}; use tensorboard, wandb, or logger=none")
    return Loggers(backends)
