"""Loggers: TensorBoard (the default) and Weights & Biases, behind one small fan-out interface."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from makemore.config import flatten
from makemore.errors import MakemoreError
from makemore.rundir import SWEEP_RECORD, is_watch_key


class TensorBoardLogger:
    """Event files in the run's own directory, so `tensorboard --logdir outputs` shows one run per directory."""

    def __init__(self, run_dir: Path, trial: str, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)
        self.trial = trial

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def figure(self, tag: str, figure, step: int) -> None:
        self.writer.add_figure(tag, figure, step)

    def summary(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        # add_hparams would open a sub-run; writing the session summaries here keeps HParams on this run. The
        # experiment summary (which columns TensorBoard shows) is the view's: see report.refresh_dashboard.
        from tensorboard.plugins.hparams import plugin_data_pb2
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        _, session_start, session_end = hparams_summaries(hparams, metrics)
        plugin = session_start.value[0].metadata.plugin_data  # the HParams table's Trial ID: the run's own name
        data = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
        data.session_start_info.group_name = self.trial
        plugin.content = data.SerializeToString()
        self.writer.file_writer.add_summary(session_start)
        self.writer.file_writer.add_summary(session_end)
        self.scalars(step, metrics)

    def target_line(self, target: float, curve: list[tuple[int, float]]) -> None:
        """TensorBoard draws the target once for every run under a view (makemore.report.refresh_dashboard)."""

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


# The metrics every run logs beside its HParams, in the order a user ranks by. TensorBoard ticks the first five:
# dev against the target, what it cost; test stays unticked, as the split nobody chooses by.
HPARAMS_METRICS = (
    "loss/dev",
    "loss/train",
    "run/params",
    "run/train_seconds",
    "run/target_met",
    "loss/test",
    "run/best_dev_loss",
    "run/step_to_target",
)


def write_level_line(directory: Path, value: float, last_step: int, points: int = 2) -> None:
    """A pseudo-run whose `loss/dev` is `value` at `points` steps from 0 to last_step: TensorBoard draws it as a
    level line in every loss/dev chart beside the runs' curves. It replaces what the directory held before."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(directory, ignore_errors=True)
    span = max(last_step, points - 1)
    with SummaryWriter(str(directory)) as writer:
        for step in sorted({round(i * span / max(points - 1, 1)) for i in range(points)}):
            writer.add_scalar("loss/dev", value, step)


def write_layout(writer, layout: dict) -> None:
    """A custom scalars layout: {category: {chart title: ("Multiline", [tag regexes]) or ("Margin", [(value, lower,
    upper) tags, ...])}}; a margin chart may draw several bands (torch's add_custom_scalars draws one)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import layout_pb2

    def chart(title: str, kind: str, tags: list) -> layout_pb2.Chart:
        if kind == "Margin":
            series = [layout_pb2.MarginChartContent.Series(value=v, lower=lo, upper=up) for v, lo, up in tags]
            return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=series))
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=tags))

    proto = layout_pb2.Layout(
        category=[
            layout_pb2.Category(title=category, chart=[chart(title, *spec) for title, spec in charts.items()])
            for category, charts in layout.items()
        ]
    )
    tensor = TensorProto(dtype="DT_STRING", string_val=[proto.SerializeToString()], tensor_shape=TensorShapeProto())
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    writer.file_writer.add_summary(
        Summary(value=[Summary.Value(tag="custom_scalars__config__", tensor=tensor, metadata=metadata)])
    )


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


def write_hparams_experiment(directory: Path, values: dict[str, list], leading: list[str], layout=None) -> None:
    """The one HParams experiment summary of a view, in a run of its own (`directory`, replaced at each call): a
    column per key of `values` (each key's values across the runs, for its typed domain, so TensorBoard
    sorts and draws numbers as numbers) and the metrics. TensorBoard puts the columns marked as differing first,
    by name, and ticks five: `leading` (what was swept) are marked. `layout`: a custom scalars layout to keep
    beside it."""
    from tensorboard.plugins.hparams import plugin_data_pb2, summary_v2
    from torch.utils.tensorboard import SummaryWriter

    summary = summary_v2.hparams_config_pb(
        [summary_v2.HParam(k, hparam_domain(v)) for k, v in values.items()],
        [summary_v2.Metric(m) for m in HPARAMS_METRICS],
    )
    plugin = summary.value[0].metadata.plugin_data
    data = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in leading
    plugin.content = data.SerializeToString()
    shutil.rmtree(directory, ignore_errors=True)
    with SummaryWriter(str(directory)) as writer:
        writer.file_writer.add_summary(summary)
        if layout:
            write_layout(writer, layout)


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
            reinit="create_new",  # a population's members log into runs open side by side in one process
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

    def target_line(self, target: float, curve: list[tuple[int, float]]) -> None:
        """The target in the summary, and a chart of the run's dev loss beside it as a level line."""
        steps = [step for step, _ in curve]
        chart = self.wandb.plot.line_series(
            xs=steps,
            ys=[[dev for _, dev in curve], [target] * len(curve)],
            keys=["loss/dev", f"target {target}"],
            title="loss/dev against the target",
            xname="step",
        )
        self.run.log({"loss/dev against the target": chart}, step=steps[-1] if steps else 0)
        self.run.summary["target"] = target

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
    """The backends listed in cfg.backends (tensorboard, wandb); an empty list logs nothing. `name`: the run's
    name (its directory's), qualified by its sweep's in TensorBoard's HParams table, where sweeps meet."""
    backends = []
    for backend in cfg.backends:
        if backend == "tensorboard":
            sweep = run_dir.parent if (run_dir.parent / SWEEP_RECORD).is_file() else None
            trial = f"{name} ({sweep.name})" if sweep else name
            backends.append(TensorBoardLogger(run_dir, trial, purge_step))
        elif backend == "wandb":
            backends.append(WandbLogger(run_dir, cfg.wandb, config, name, wandb_id))
        else:
            raise MakemoreError(f"unknown logger backend {backend!r}; use tensorboard, wandb, or logger=none")
    return Loggers(backends)
