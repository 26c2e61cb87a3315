"""`tensorboard --logdir outputs` over two sweeps and a single run, made by real commands from a working directory
as a user makes them, read back from the event files: one experiment summary (the union of the swept keys, typed),
each sweep's leaderboard, seed groups as bands, the target and best-dev lines, and run names told apart."""

import math
import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from makemore.dashboard import HPARAMS_METRICS, fixed_width_tables
from makemore.rundir import find_runs, read_history, read_metrics

from helpers import ROOT, made_once, run_script

pytestmark = pytest.mark.slow  # real runs; the layout, the typed domains and the summary also have fast tests

QUICK = ["steps=40", "eval_interval=10", "progress=false", "samples=2"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A grid over two seeds, a sweep of two counting models and one single run, under one outputs/ (made once
    for the session: the tests only read it)."""

    def make(cwd):
        for args in (
            ["-m", "model.emb=4,10", "seeds=2", *QUICK],
            ["-m", "model=bigram_count,trigram_count", "progress=false", "samples=2"],
            QUICK,
        ):
            result = run_script(str(ROOT / "train.py"), *args, cwd=cwd)
            assert result.returncode == 0, result.stderr[-2000:]

    return made_once(tmp_path_factory, "dashboard_user", make) / "outputs"


def events(directory):
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def event_dirs(outputs):
    """Every directory TensorBoard reads as a run: each that holds an event file."""
    return sorted({p.parent for p in outputs.rglob("events.out.tfevents.*")})


def hparams(accumulator) -> dict:
    try:
        content = accumulator.PluginTagToContent("hparams")
    except KeyError:  # no HParams in this directory
        return {}
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}


def test_one_experiment_summary_opens_on_the_union_of_the_swept_keys_typed(outputs):
    summaries = {d: hparams(events(d)) for d in event_dirs(outputs)}
    [where] = [d for d, tags in summaries.items() if "_hparams_/experiment" in tags]  # TensorBoard reads one
    assert where == outputs / "dashboard"
    experiment = summaries[where]["_hparams_/experiment"].experiment
    columns = {info.name: info for info in experiment.hparam_infos}
    assert {name for name, info in columns.items() if info.differs} == {"model.emb", "model.name", "seed", "steps"}
    emb = columns["model.emb"]  # numbers sort and draw as numbers: 4 below 10
    assert emb.type == api_pb2.DATA_TYPE_FLOAT64 and [v.number_value for v in emb.domain_discrete.values] == [4, 10]
    assert [v.string_value for v in columns["model.name"].domain_discrete.values] == [
        "bigram_count",
        "mlp",
        "trigram_count",
    ]
    assert "batch_size" not in columns and "data.path" not in columns  # constants everywhere: no column
    assert "target" not in columns  # 2.2 everywhere: a member's saved `${names_target:...}` is read resolved
    assert all(info.type != api_pb2.DATA_TYPE_UNSET and info.domain_discrete.values for info in columns.values())
    assert "model.alpha" in columns and not columns["model.alpha"].differs  # differs, was not swept: unticked
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics == list(HPARAMS_METRICS) and metrics[:5] == [
        "loss/dev",
        "loss/train",
        "run/params",
        "run/train_seconds",
        "run/target_met",
    ]  # TensorBoard ticks the first five
    start = "_hparams_/session_start_info"
    sessions = {d: tags[start].session_start_info for d, tags in summaries.items() if start in tags}
    assert len(sessions) == 7 and all(session.hparams["model.name"].string_value for session in sessions.values())
    trials = [session.group_name for session in sessions.values()]
    assert len(set(trials)) == 7  # one row each, never merged
    kinds = {}  # each key one type across the rows, as the summary's typed domain says
    for session in sessions.values():
        for key, value in session.hparams.items():
            kinds.setdefault(key, set()).add(value.WhichOneof("kind"))
    assert all(len(kind) == 1 for kind in kinds.values()), {k: v for k, v in kinds.items() if len(v) > 1}
    grid = [d for d in sessions if d.name.startswith("emb=")]
    assert sorted(d.name for d in grid) == ["emb=10 s42", "emb=10 s43", "emb=4 s42", "emb=4 s43"]
    assert all(sessions[d].group_name == f"{d.name} ({d.parent.name})" for d in grid)  # what differs first


def test_each_sweep_root_is_a_run_with_its_leaderboard_and_seed_groups_as_bands(outputs):
    roots = sorted(p.parent for p in outputs.rglob("multirun.yaml"))
    assert len(roots) == 2
    for root in roots:
        accumulator = events(root)
        [leaderboard] = accumulator.Tensors("sweep/leaderboard/text_summary")[-1:]
        text = leaderboard.tensor_proto.string_val[0].decode()
        assert text == fixed_width_tables((root / "leaderboard.md").read_text())
        assert accumulator.Tensors("sweep/verdict/text_summary") and accumulator.Images("sweep/leaderboard")
    grid = next(root for root in roots if (root / "emb=4 s42").is_dir())
    for emb in (4, 10):  # each group's band is a run of its own, so TensorBoard gives each its colour
        tags = events(grid / f"seeds emb={emb}").Tags()["scalars"]
        assert sorted(tags) == sorted(
            f"{t}/{p}" for t in (f"seeds/emb={emb}", "seeds") for p in ("lower", "mean", "upper")
        )
    [config] = events(grid).Tensors("custom_scalars__config__")
    [category] = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0]).category
    assert category.title == f"{grid.name}: seed groups, mean dev loss ± 1 std"
    *each, every = category.chart  # TensorBoard draws a category's charts last first
    assert [(s.value, s.lower, s.upper) for s in every.margin.series] == [("seeds/mean", "seeds/lower", "seeds/upper")]
    assert [chart.title.split()[0] for chart in each] == ["#2", "#1"]
    text = events(grid).Tensors("sweep/leaderboard/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.count("```") == 4 and all(
        line.startswith(("|", "```")) for line in text.split("```")[1].strip().splitlines()
    )


def test_no_chart_of_the_view_is_marked_missing_tags(outputs):
    """TensorBoard marks a margin chart "Missing Tags" on a run that holds some of the chart's series' tags but
    not all of them (it forgives a run that lacks exactly one series: three tags)."""
    runs = {d: set(events(d).Tags()["scalars"]) for d in event_dirs(outputs)}
    charts = []
    for d in runs:
        accumulator = events(d)
        layouts = "custom_scalars__config__" in accumulator.Tags()["tensors"]
        for config in accumulator.Tensors("custom_scalars__config__") if layouts else []:
            layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
            charts += [chart for category in layout.category for chart in category.chart if chart.HasField("margin")]
    assert charts
    for chart in charts:
        for d, tags in runs.items():
            missing = [t for s in chart.margin.series for t in (s.value, s.lower, s.upper) if t not in tags]
            assert len(missing) in (0, 3), (chart.title, d, missing)


def test_the_view_opens_on_dev_against_a_target_told_apart_and_no_clipped_winner(outputs):
    [config] = events(outputs / "dashboard").Tensors("custom_scalars__config__")
    [category] = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0]).category
    [[pattern]] = [list(chart.multiline.tag) for chart in category.chart]
    assert re.search(pattern, "loss/dev") and not re.search(pattern, "loss/dev_ema")  # as TensorBoard matches tags
    runs = find_runs(outputs)
    curves = [[float(r["loss/dev"]) for r in read_history(run) if r.get("loss/dev")] for run in runs]
    finals = [read_metrics(run)["dev_loss"] for run in runs]
    target = events(outputs / "target 2.2").Scalars("loss/dev")
    best = events(outputs / "best dev").Scalars("loss/dev")
    assert [point.value for point in target] == pytest.approx([2.2] * len(target))
    lowest = min(min(curve, default=math.inf) for curve in [*curves, finals])
    assert [point.value for point in best] == pytest.approx([lowest] * len(best))
    points = sum(map(len, curves)) + len(finals) + len(target) + len(best)
    assert len(best) > 0.05 * points  # more than "ignore outliers" drops: the lowest curve stays in the chart
    names = [str(d.relative_to(outputs)) for d in event_dirs(outputs)]
    assert len(set(names)) == len(names) and "." not in names  # no nameless run: the summary's is `dashboard`
    assert events(outputs / "dashboard").Tags()["scalars"] == []  # it draws nothing in the charts
