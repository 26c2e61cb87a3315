"""The TensorBoard dashboard's own files, written for a whole view (every run under a logdir) rather than by one
run's logger: the HParams experiment summary, custom scalars layouts and the level lines (the target, the best dev).
makemore.report decides what they show; each run's own events are makemore.loggers.tensorboard's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from makemore.metrics import FINAL_METRICS

# The metrics every run logs beside its HParams, in the order a user ranks by (TensorBoard ticks the first five).
HPARAMS_METRICS = tuple(metric.tag for metric in FINAL_METRICS if metric.tag)


def fixed_width_tables(markdown: str) -> str:
    """Markdown for TensorBoard's Text tab, each table in a code block, as aligned as in the file: the tab fits a
    table to its card and breaks cells anywhere, numbers included, where a code block keeps its lines whole."""
    lines, table = [], False
    for line in markdown.splitlines():
        if line.startswith("|") != table:
            table = not table
            lines.append("```")
        lines.append(line)
    return "\n".join(lines + ["```"] * table)


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
