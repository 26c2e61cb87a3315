"""Report: the leaderboard of a sweep or of any directory of runs, and the end-of-sweep Hydra callbacks."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import statistics
import sys
import warnings
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from makemore import lock, timeline
from makemore.cli import continue_command
from makemore.config import experiment_hparams, short_names, significant
from makemore.dashboard import fixed_width_tables, write_hparams_experiment, write_layout, write_level_line
from makemore.errors import CannotWrite, MakemoreError, refuse, refused_write
from makemore.evaluate import evaluate, evaluated_data, write_evaluation
from makemore.loggers import writes_tensorboard
from makemore.metrics import leaderboard_cells
from makemore.mixture import ENSEMBLES, ensemble_losses, load_members, mixture_weights, write_record
from makemore.rundir import (
    CONFIG,
    ENSEMBLE,
    HISTORY,
    METRICS,
    OVERRIDES,
    REPORT_FILES,
    SWEEP_RECORD,
    dashboard_root,
    find_runs,
    is_watch_key,
    read_history,
    read_metrics,
    read_overrides,
    run_directory_of,
)
from makemore.search import IMPORTANCES, OPTIMIZATION_RESULTS, PARETO_FRONT, RESULT_OBJECTIVES, TRIAL_VALUES, Pareto
from makemore.shell import report_command, rescore_command, train_command

CURVES_SHOWN = 6
LABEL_WIDTH = 39  # an Optuna trial's label on the leaderboard, at most


def read_run(run_dir: Path) -> dict | None:
    """One run's metrics and overrides; an unreadable run gives a warning and None."""
    try:
        metrics = read_metrics(run_dir)
        if metrics is None:  # started, never finished: killed, or still running
            metrics = {"status": "incomplete", "error": "no metrics.json: still running, or killed"}
        overrides = read_overrides(run_dir)
        if not isinstance(metrics, dict):
            raise ValueError("unexpected contents")
    except (OSError, ValueError, TypeError, yaml.YAMLError) as e:
        warnings.warn(f"skipping unreadable run {run_dir}: {e}", stacklevel=2)
        return None
    pairs = (str(o).lstrip("+~").split("=", 1) for o in overrides)
    overrides = {p[0]: p[1] if len(p) > 1 else "" for p in pairs}
    ensemble = None
    if (run_dir / ENSEMBLE).is_file():  # an ensemble's record (makemore.mixture): a row as a run's, its model column
        ensemble, overrides = json.loads((run_dir / ENSEMBLE).read_text(encoding="utf-8")), {"model": "ensemble"}
    return {"dir": run_dir, "metrics": metrics, "overrides": overrides, "ensemble": ensemble}


def dev_loss(run: dict) -> float:
    value = run["metrics"].get("dev_loss") if run["metrics"].get("status") == "ok" else None
    return value if isinstance(value, (int, float)) and not math.isnan(value) else math.inf


def varying_overrides(runs: list[dict]) -> list[str]:
    """Override keys whose values differ between runs (but those that only change how a run is watched)."""
    keys = sorted({k for run in runs for k in run["overrides"] if not is_watch_key(k)})
    return [k for k in keys if len({run["overrides"].get(k, "") for run in runs}) > 1]


def leaderboard(runs: list[dict], root: Path, scored: EvalColumn | None = None) -> list[dict]:
    """Rows ranked by dev loss (finished runs first, failures after), with a column per override that differs, and
    one for each run's loss on another data file (`scored`: the column's name and the losses by run directory)."""
    varying = varying_overrides(runs)
    ranked = sorted(runs, key=lambda run: (run["metrics"].get("status") != "ok", dev_loss(run), str(run["dir"])))
    targets = [run["metrics"]["target"] for run in ranked if run["metrics"].get("target") is not None]
    target = targets[0] if targets else "target"
    front = pareto_front(root)
    rows = []
    for rank, run in enumerate(ranked, 1):
        m, ok = run["metrics"], run["metrics"].get("status") == "ok"
        name = str(run["dir"].relative_to(root)) if run["dir"] != root else run["dir"].name
        rerun_dir = os.path.relpath(run["dir"])
        if run.get("ensemble"):
            name += f" (ensemble of {len(run['ensemble']['runs'])}, {run['ensemble']['weighting']} weights)"
        rows.append(
            {
                "rank": rank if ok else "-",
                "run": name,
                **{k: run["overrides"].get(k, "") for k in varying},
                **leaderboard_cells(m, target),
                **({scored[0]: _loss(scored[1][run["dir"]]) if run["dir"] in scored[1] else ""} if scored else {}),
                **({"pareto": "✓" if run["overrides"].get("trial") in front else ""} if front else {}),
                "status": m.get("status", "?") + (f": {m['error']}" if m.get("error") else ""),
                "rerun": rescore_command(rerun_dir) if run.get("ensemble") else train_command("rerun", rerun_dir),
            }
        )
    return rows


def search_results(sweep_dir: Path) -> dict:
    """An Optuna search's optimization_results.yaml (its best trial or Pareto front, its importances); empty for
    any other sweep."""
    results = sweep_dir / OPTIMIZATION_RESULTS
    return OmegaConf.to_container(OmegaConf.load(results)) if results.is_file() else {}


def importances_line(sweep_dir: Path) -> str:
    """An Optuna search's parameter importances, as a line under its table."""
    importances = search_results(sweep_dir).get(IMPORTANCES)
    if not importances:
        return ""
    shares = ", ".join(f"{key} {share:.2f}" for key, share in importances.items())
    return f"\nparameter importances (Optuna's PED-ANOVA, normalised to sum to 1): {shares}\n"


def pareto_front(sweep_dir: Path) -> set[str]:
    """The trial numbers on a multi-objective Optuna study's Pareto front, as the members' `trial=` overrides write
    them; empty for any other sweep."""
    return {str(number) for number in search_results(sweep_dir).get(PARETO_FRONT, [])}


def pareto_points(sweep_dir: Path) -> Pareto | None:
    """A multi-objective study's trials as the leaderboard's figure draws them: dev loss (else the second
    objective) against the first other objective, every finished trial a point, its front marked; None for any
    other sweep."""
    results = search_results(sweep_dir)
    if PARETO_FRONT not in results:
        return None
    objectives = results[RESULT_OBJECTIVES]
    y = "dev_loss" if "dev_loss" in objectives else objectives[1]
    x = next(objective for objective in objectives if objective != y)
    points = {
        f"t{number}": (values[objectives.index(x)], values[objectives.index(y)])
        for number, values in results[TRIAL_VALUES].items()
    }
    return Pareto(x, y, points, {f"t{number}" for number in results[PARETO_FRONT]})


EvalColumn = tuple[str, dict[Path, float]]


def eval_column(runs: list[dict], data: Path) -> EvalColumn:
    """Each finished run's loss on every item of `data` its model can score (items with characters it never saw
    are skipped, and said so), written down as an evaluation record of its own."""
    scores = [
        evaluate(run["dir"], "all", data, skip_unseen=True, given_as="eval_data=")
        for run in runs
        if dev_loss(run) < math.inf
    ]
    for score in scores:
        if score.skipped_items:
            every = score.items + score.skipped_items
            print(f"{score.run}: {score.skipped_items:,} of {every:,} items of {data} skipped for {score.unseen!r}")
    print(f"evaluation record: {write_evaluation(scores, evaluated_data('all', data))}")
    return f"{data.name} loss", {Path(score.run): score.loss for score in scores}


def label(run: dict, varying: list[str]) -> str:
    """A run told apart by what differs: its overrides that vary across the runs, short (`emb=10 hidden=200`, as
    makemore.config.short_names writes them) with numbers at 4 significant digits (`lr=0.01374`: the CSV's columns
    and the configs keep every digit), an Optuna trial's as trial_label writes it; no job number, no constants."""
    overrides = run["overrides"]
    shown = short_names([f"{k}={significant(overrides[k])}" for k in varying if k in overrides])
    if "trial" not in overrides:
        return " ".join(shown)
    return trial_label(overrides["trial"], shown)


def trial_label(trial: str, shown: list[str]) -> str:
    """An Optuna trial's label, its number first (which alone tells it apart): its keys' words by their initials
    (`block_size=4` -> `bs=4`) and cut to LABEL_WIDTH, ending in `...` where values were left out (a search of four
    keys fits: `t3 bs=4 emb=10 hidden=350 lr=0.01374`)."""
    words = [f"t{trial}", *(re.sub(r"[a-z]+_[a-z_]+(?==)", initials, item) for item in shown)]
    while len(" ".join(words)) > LABEL_WIDTH:
        words = [*words[: len(words) - 1 - (words[-1] == "...")], "..."]
    return " ".join(words)


def initials(key: re.Match) -> str:
    return "".join(word[0] for word in key.group(0).split("_") if word)


def group_label(group: list[dict], varying: list[str]) -> str:
    """A seed group's label: its runs' (one that reported to an Optuna trial, where one did: the confirming runs
    of `hydra.sweeper.confirm` did not), or `all`."""
    run = next((run for run in group if "trial" in run["overrides"]), group[0])
    return label(run, varying) or "all"


def _loss(value) -> str:
    """A finished run's loss; null in metrics.json is an infinite loss (JSON has no infinity)."""
    return f"{value:.4f}" if isinstance(value, (int, float)) else "inf"


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "no runs found\n"
    columns = list(rows[0])
    cells = [[str(row.get(c, "")).replace("|", "\\|") for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)]) + "\n"


def finished_curves(runs: list[dict]) -> list[list[tuple[int, float]]]:
    """The dev curves (dev_curve) of the runs that finished with a finite dev loss."""
    return [dev_curve(run) for run in runs if dev_loss(run) < math.inf]


def dev_curve(run: dict) -> list[tuple[int, float]]:
    """(step, dev loss) at every evaluation, ending with the final full-split dev loss."""
    points = [(int(r["step"]), float(r["loss/dev"])) for r in read_history(run["dir"]) if r.get("loss/dev")]
    return points + [(run["metrics"].get("steps", 0), dev_loss(run))]


def write_report(root: Path, rewrite: bool = True, eval_data: Path | None = None) -> list[dict]:
    """Print the leaderboard of every run under root and write leaderboard.csv/.md/.png into root.

    Into root unless root is (or is inside) a run directory, whose files no command changes, or (without
    `rewrite`: the end of a sweep, continued or not, rewrites its own) a report is already there: then it only
    prints. With `eval_data`, every finished run's model is also scored on that file: a column of its own, and an
    evaluation record (makemore.evaluate).
    """
    runs = [r for r in map(read_run, find_runs(root)) if r is not None]
    rows = leaderboard(runs, root, eval_column(runs, eval_data) if eval_data else None)
    table = markdown(rows)
    finished = sorted((r for r in runs if dev_loss(r) < math.inf), key=dev_loss)[:CURVES_SHOWN]
    target = finished[0]["metrics"].get("target") if finished else None
    best = best_line(runs)
    groups = seed_groups(runs)
    if groups:  # the same configs over several seeds: rank the configs by their mean, against their spread
        ranked = ranked_groups(groups)
        grouped = [row for row, _ in ranked]
        table = f"{markdown(with_ensembles(ranked))}\n{verdict(grouped)}\n\nevery run:\n\n{table}"
    table += importances_line(root)
    print(f"\nleaderboard of {len(rows)} runs in {root} ({best})\n{table}", end="")
    inside = run_directory_of(root)
    if inside:
        print(f"not written: {root} is inside the run directory {inside}, whose files no command changes")
        return rows
    earlier = [name for name in REPORT_FILES if (root / name).exists()]
    if earlier and not rewrite:
        print(
            f"not written: {root / earlier[0]} exists (a sweep or an earlier report wrote it) and no command "
            "changes what the project wrote; the table above is today's"
        )
        return rows
    (root / "leaderboard.md").write_text(table, encoding="utf-8")
    write_csv(root / "leaderboard.csv", rows)
    if groups:
        write_csv(root / "leaderboard_groups.csv", with_ensembles(ranked))
    varying = varying_overrides(runs)

    def name(run: dict) -> str:  # the plot's label: what differs, not the directory's job number and constants
        return label(run, varying) or str(run["dir"].relative_to(root))  # root is no run: that returned above

    curves = {name(r): dev_curve(r) for r in finished}
    costs = {name(r): (r["metrics"]["train_seconds"], dev_loss(r)) for r in runs if dev_loss(r) < math.inf}
    bands = {}
    if groups:  # each group's mean dev curve with a band of one standard deviation over its seeds, in rank order
        for row, group in ranked:
            if row["rank"] != "-" and row["rank"] <= CURVES_SHOWN:
                bands[row["group"]] = mean_band(finished_curves(group))
        curves = {}
        costs = {row["group"]: (float(row["seconds"]), float(row["dev mean"])) for row in grouped if row["n"]}
    from makemore import plots  # matplotlib takes ~0.5 s to import: only where a figure is drawn

    figure = plots.leaderboard_figure(curves, costs, target, bands, pareto_points(root))
    plots.save(figure, root / "leaderboard.png")
    print(f"written: {root}/leaderboard.{{md,csv,png}}")
    return rows


def seed_groups(runs: list[dict]) -> list[list[dict]]:
    """Runs that differ only in `seed`, grouped; none when the runs don't vary their seed."""
    runs = [run for run in runs if not run.get("ensemble")]  # an ensemble's record has no seed
    if len({run["overrides"].get("seed") for run in runs}) < 2:
        return []
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        key = tuple(sorted((k, v) for k, v in run["overrides"].items() if k != "seed" and not is_watch_key(k)))
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def ranked_groups(groups: list[list[dict]]) -> list[tuple[dict, list[dict]]]:
    """One row per seed group (mean and standard deviation over its finished seeds) with the group's runs, ranked
    by mean dev loss."""
    varying = [k for k in varying_overrides([run for group in groups for run in group]) if k != "seed"]
    ranked = []
    for group in groups:
        done = [run for run in group if dev_loss(run) < math.inf]
        row = {
            "group": group_label(group, varying),
            "n": len(done),
            "seeds": " ".join(sorted((run["overrides"].get("seed", "") for run in group), key=lambda s: (len(s), s))),
        }
        for split in ("dev", "train", "test"):
            values = [run["metrics"][f"{split}_loss"] for run in done]
            row[f"{split} mean"] = f"{statistics.fmean(values):.4f}" if values else ""
            row[f"{split} std"] = f"{statistics.stdev(values):.4f}" if len(values) > 1 else ""
        row["seconds"] = f"{statistics.fmean(r['metrics']['train_seconds'] for r in done):.1f}" if done else ""
        row["status"] = f"{len(done)} of {len(group)} ok"
        ranked.append((row, group))
    ranked.sort(key=lambda pair: float(pair[0]["dev mean"]) if pair[0]["dev mean"] else math.inf)
    return [({"rank": i if row["n"] else "-", **row}, group) for i, (row, group) in enumerate(ranked, 1)]


def with_ensembles(ranked: list[tuple[dict, list[dict]]]) -> list[dict]:
    """The seed groups' rows (ranked_groups'), each followed by its ensemble's: its finished members' averaged
    probabilities scored on dev and test (makemore.ensemble), unranked."""
    rows = []
    for row, group in ranked:
        rows.append(row)
        done = [run["dir"] for run in group if dev_loss(run) < math.inf]
        losses = ensemble_losses(done) if len(done) > 1 else None
        if losses:
            empty = dict.fromkeys(row, "")
            rows.append(
                {
                    **empty,
                    "group": f"{row['group']}: ensemble of {len(done)}",
                    "n": len(done),
                    "seeds": row["seeds"],
                    "dev mean": f"{losses['dev']:.4f}",
                    "test mean": f"{losses['test']:.4f}",
                    "status": "averaged probabilities",
                }
            )
    return rows


def mean_band(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float], list[float]]:
    """Steps every curve has, with the mean and standard deviation of the dev loss there."""
    steps = sorted(set.intersection(*(set(dict(curve)) for curve in curves)))
    values = [[dict(curve)[step] for curve in curves] for step in steps]
    return steps, [statistics.fmean(v) for v in values], [statistics.pstdev(v) for v in values]


def best_line(runs: list[dict]) -> str:
    """The best dev loss and whether it met the target, or that no run finished."""
    finished = sorted((r for r in runs if dev_loss(r) < math.inf), key=dev_loss)
    if not finished:
        return "no finished run"
    best_dev, target = dev_loss(finished[0]), finished[0]["metrics"].get("target")
    met = "no target" if target is None else f"target {target} {'met' if best_dev < target else 'not met'}"
    return f"best dev {best_dev:.4f}: {met}"


# The custom scalars chart a view opens on: every run's dev curve with the level lines of refresh_dashboard.
ANSWER_LAYOUT = {
    # anchored: TensorBoard searches each tag for the pattern, and loss/dev_ema (ema_decay=) is a chart of its own
    "dev loss": {"loss/dev of every run, against the target and the best dev": ["Multiline", ["^loss/dev$"]]}
}


def write_sweep_summary(sweep_dir: Path, runs: list[dict]) -> None:
    """The sweep's root as a run of its own in TensorBoard: the leaderboard as text (with seeds, the group rows
    first) and as its picture, the verdict (the best dev against the target, and for seed groups whether the best
    beats the second), and for seed groups their mean dev curves with a band of one standard deviation (custom
    scalars)."""
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    ranked = ranked_groups(seed_groups(runs))
    line = best_line(runs) + (f"; {verdict([row for row, _ in ranked])}" if ranked else "")
    charts = write_seed_bands(sweep_dir, ranked) if ranked else {}
    with SummaryWriter(str(sweep_dir)) as writer:
        if charts:
            write_layout(writer, {f"{sweep_dir.name}: seed groups, mean dev loss ± 1 std": charts})
        writer.add_text("sweep/verdict", line, len(runs))
        if (sweep_dir / "leaderboard.md").is_file():  # with seeds, the group rows first
            text = fixed_width_tables((sweep_dir / "leaderboard.md").read_text(encoding="utf-8"))
            writer.add_text("sweep/leaderboard", text, len(runs))
        if (sweep_dir / "leaderboard.png").is_file():
            picture = imread(sweep_dir / "leaderboard.png")[..., :3]
            writer.add_image("sweep/leaderboard", picture, len(runs), dataformats="HWC")


def write_seed_bands(sweep_dir: Path, ranked: list[tuple[dict, list[dict]]]) -> dict:
    """Each seed group's mean dev curve and mean ± 1 std as scalars `seeds/<group>/{mean,lower,upper}`, in a run of
    its own (`<sweep>/seeds <group>`: TensorBoard colours by run, so each group gets its colour), and again as
    `seeds/{mean,lower,upper}`, the tags every group shares. Returns the custom scalars charts, as TensorBoard shows
    them: every group's band in one chart, then each group's, in rank order. `ranked`: ranked_groups'."""
    from torch.utils.tensorboard import SummaryWriter

    charts = {}
    for row, group in ranked:
        curves = finished_curves(group)  # each ends with the final dev loss: never empty
        if not curves:
            continue
        name = row["group"]
        directory = sweep_dir / f"seeds {name}"
        shutil.rmtree(directory, ignore_errors=True)  # derived from the runs: a continued sweep's end redraws it
        with SummaryWriter(str(directory)) as writer:
            for at, mean, std in zip(*mean_band(curves)):
                for prefix in (f"seeds/{name}", "seeds"):
                    writer.add_scalar(f"{prefix}/mean", mean, at)
                    writer.add_scalar(f"{prefix}/lower", mean - std, at)
                    writer.add_scalar(f"{prefix}/upper", mean + std, at)
        charts[f"#{row['rank']} {name} (n={len(curves)})"] = ("Margin", [band_tags(f"seeds/{name}")])
    # One series every group's run holds whole: a margin chart marks "Missing Tags" on a run that has some of its
    # series' tags but not all (TensorBoard forgives only a run lacking exactly one series), so one series per
    # group, each in its own run, would mark every run.
    shown = {"every group, in one chart": ("Margin", [band_tags("seeds")]), **charts}
    return dict(reversed(shown.items()))  # TensorBoard draws a category's charts last first


def band_tags(prefix: str) -> tuple[str, str, str]:
    """A margin chart's series: the (value, lower, upper) tags under prefix."""
    return f"{prefix}/mean", f"{prefix}/lower", f"{prefix}/upper"


# The level lines' points: TensorBoard's "ignore outliers" drops the lowest 5% of a chart's points from its scale,
# so the best-dev line carries more than that share, at the lowest value, and no run's curve leaves the chart. The
# target line as many: custom scalars mark every point, so both read as thick rows of markers beside the runs.
OUTLIER_SHARE = 0.06
MAX_POINTS = 1000  # TensorBoard keeps at most this many points of a series
VIEW_INDEX = "dashboard.jsonl"  # at a view's root: what its refresh needs of each ended run (view_runs)
# A view's own runs at its root: the HParams summary, and the level lines in every loss/dev chart.
SUMMARY_RUN, BEST_LINE, TARGET_LINE = "dashboard", "best dev", "target {}"


def is_view_run(name: str) -> bool:
    """Whether a directory at a view's root is one of the view's own runs, not a run or sweep of the user's."""
    return name in (SUMMARY_RUN, BEST_LINE) or name.startswith(TARGET_LINE.format(""))


def refresh_dashboard(root: Path, ended: list[Path]) -> None:
    """`tensorboard --logdir <root>` opens on what differs across everything under it, the runs that just `ended`
    included. One HParams experiment summary, in the run `<root>/dashboard`, replaced at each refresh (TensorBoard
    reads a single one and picks arbitrarily among several): the keys swept anywhere under it first, then every
    other key that differs, each typed, and the metrics. Level lines in every loss/dev chart: `target <t>` per
    target and `best dev`, the lowest dev loss reached. And, beside the summary, the custom scalars chart of every
    run's loss/dev against them. What it needs of each run comes from the view's index (view_runs)."""
    write_view_summary(root, view_runs(root, ended))


def write_view_summary(root: Path, runs: list[dict], shared_only: bool = False) -> list[str]:
    """A view's own files at `root` for these runs (view_runs' entries): the HParams experiment summary in the run
    `<root>/dashboard`, the level lines and the custom scalars chart (refresh_dashboard says what each shows).
    `shared_only`: past the swept keys, only the keys every run has, so that the five columns TensorBoard ticks
    are ones parallel coordinates can draw every run on (it leaves out a run that lacks a ticked key). Returns the
    keys the summary leads with (none without runs)."""
    if not runs:
        return []
    differing = differing_hparams(runs)
    swept = swept_hparams(runs, differing) or ["model.name", "steps"]  # one run, or runs alike: what they are
    logged = logged_hparams(runs)
    others = sorted(k for k in differing - set(swept) if not shared_only or all(k in h for h in logged))
    columns = hparam_values(runs, swept + others)
    write_hparams_experiment(root / SUMMARY_RUN, columns, swept, ANSWER_LAYOUT)
    curves = [run["curve"] for run in runs if dev_loss(run) < math.inf]  # (last step, points, lowest dev) each
    last_step = max((last for last, _, _ in curves), default=0)
    points = min(MAX_POINTS, max(2, math.ceil(OUTLIER_SHARE * sum(count for _, count, _ in curves))))
    for target in {run["metrics"].get("target") for run in runs} - {None}:  # dense: a thick row of markers
        write_level_line(root / TARGET_LINE.format(target), target, last_step, points)
    if curves:
        write_level_line(root / BEST_LINE, min(lowest for _, _, lowest in curves), last_step, points)
    return swept


def view_runs(root: Path, ended: list[Path]) -> list[dict]:
    """The ended runs under a view, from its index (`<root>/dashboard.jsonl`, a line per run): a refresh reads one
    file, not every run's files (~5 ms a run kept). The `ended` runs join it; a run deleted since drops out, a
    resumed run's last line wins. Without an index (a first refresh, an earlier makemore's outputs, or after
    deleting it to take in runs copied there), every run under root is read once and the index written."""
    index = root / VIEW_INDEX
    if index.is_file():
        added = [view_entry(run, root) for run in map(read_run, ended) if run is not None]
        if added:
            descriptor = os.open(index, os.O_WRONLY | os.O_APPEND)
            try:  # one write, which the kernel appends whole beside another process's
                os.write(descriptor, "".join(json.dumps(entry) + "\n" for entry in added).encode())
            finally:
                os.close(descriptor)
        entries = [json.loads(line) for line in index.read_text(encoding="utf-8").splitlines() if line]
    else:
        entries = [view_entry(run, root) for run in map(read_run, find_runs(root)) if run is not None]
        root.mkdir(parents=True, exist_ok=True)
        scratch = index.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text("".join(json.dumps(entry) + "\n" for entry in entries), encoding="utf-8")
        scratch.replace(index)
        warn_of_earlier_summaries(root)
    latest = {entry["dir"]: entry for entry in entries}
    kept = [name for name in latest if os.path.isfile(f"{root}/{name}/{METRICS}")]  # str: 10,000 Paths cost 0.2 s
    return [{**latest[name], "dir": root / name} for name in kept]


def view_entry(run: dict, root: Path) -> dict:
    """A run's line in its view's index: its overrides, metrics and HParams, and its dev curve's last step, number
    of points and lowest dev (dev_curve's)."""
    curve = dev_curve(run) if dev_loss(run) < math.inf else []
    logged_hparams([run])
    return {
        "dir": Path(os.path.relpath(run["dir"].resolve(), root.resolve())).as_posix(),
        "overrides": run["overrides"],
        "metrics": run["metrics"],
        "hparams": run["hparams"],
        "curve": [
            max((step for step, _ in curve), default=0),
            len(curve),
            min((dev for _, dev in curve), default=None),
        ],
    }


def warn_of_earlier_summaries(root: Path) -> None:
    """Warn of the directories under root whose own event files hold an HParams experiment summary: sweeps that
    wrote theirs at their root before one view held one (the tag's name is plain bytes in the file)."""
    roots = {p.parent for p in root.rglob(SWEEP_RECORD)}
    earlier = sorted(
        {d for d in roots for f in d.glob("events.out.tfevents.*") if b"_hparams_/experiment" in f.read_bytes()}
    )
    if earlier:
        print(
            f"warning: {earlier[0]} holds an HParams summary of its own (a sweep from an earlier makemore), "
            f"and {len(earlier) - 1} more; TensorBoard may open {root} on it instead of {root / 'dashboard'}: move "
            "those sweeps out of it, or delete the events.out.tfevents.* files at their roots",
            file=sys.stderr,
        )


def verdict(rows: list[dict]) -> str:
    """Whether the best seed group beats the second by more than their seed-to-seed spread (one std each)."""
    ranked = [row for row in rows if row["n"]]
    if len(ranked) < 2:
        return "only one group finished: nothing to compare"
    best, second = ranked[:2]
    gap = float(second["dev mean"]) - float(best["dev mean"])
    if not (best["dev std"] and second["dev std"]):
        return (
            f"{best['group']} leads {second['group']} by {gap:.4f} dev, "
            "but with one seed there is no spread to judge it by"
        )
    spread = float(best["dev std"]) + float(second["dev std"])
    beats = "more than" if gap > spread else "within"
    meaning = "a real difference" if gap > spread else "not a difference these seeds can tell apart"
    return (
        f"{best['group']} beats {second['group']} by {gap:.4f} dev, {beats} their seed-to-seed spread "
        f"({best['dev std']} + {second['dev std']} = {spread:.4f}): {meaning}"
    )


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["run"])
        writer.writeheader()
        writer.writerows(rows)


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    """The lr where the smoothed loss bottoms out, as read off lecture 2's plot."""
    window = max(1, len(losses) // 20)
    neighbourhoods = [losses[max(0, i - window) : i + window + 1] for i in range(len(losses))]
    smoothed = [sum(n) / len(n) for n in neighbourhoods]
    finite = [(loss, i) for i, loss in enumerate(smoothed) if math.isfinite(loss)]
    return lrs[min(finite)[1]]


def write_lr_finder(run_dir: Path, out_dir: Path) -> float:
    """Plot a finder run's train loss against log10(lr) into out_dir/lr_finder.png; return the suggested lr."""
    rows = [r for r in read_history(run_dir) if r.get("loss/train")]  # evaluation-only points have no train loss
    lrs, losses = [float(r["lr"]) for r in rows], [float(r["loss/train"]) for r in rows]
    suggested = suggest_lr(lrs, losses)
    from makemore import plots

    plots.save(plots.lr_finder(lrs, losses, suggested), out_dir / "lr_finder.png")
    print(f"lr finder: suggested lr {suggested:.3g} (the loss bottoms out there); plot: {out_dir / 'lr_finder.png'}")
    return suggested


def swept_hparams(runs: list[dict], differing: set[str] | None = None) -> list[str]:
    """The HParams columns a sweep opens on: what it swept (a swept group as its option's name; a swept preset
    such as budget= as the model and steps it sets), else every key that differs. TensorBoard sorts the columns
    by name and ticks the first five, so listing only these keeps them in view. `differing`: differing_hparams'
    answer, where the caller has it."""
    differing = differing_hparams(runs) if differing is None else differing
    swept = set(varying_overrides(runs))
    columns = {k for k in differing if k in swept or (k.endswith(".name") and k[:-5] in swept)}
    if any(k not in differing and f"{k}.name" not in differing for k in swept):  # budget=, experiment=
        columns |= {"model.name", "steps"} & differing
    leading = ("model.name", "steps")  # what a swept preset changes first
    return sorted(columns or differing, key=lambda k: (k not in leading, k))


def logged_hparams(runs: list[dict]) -> list[dict]:
    """Each run's HParams as it logged them (from its saved config), read once per run: the columns, their
    values and what differs all ask for them."""
    from omegaconf import OmegaConf

    for run in runs:
        if "hparams" not in run and run.get("ensemble"):  # no config of its own: what it mixed
            run["hparams"] = run["ensemble"]["hparams"]
        if "hparams" not in run:
            saved = run["dir"] / CONFIG
            # resolved: a sweep member's saved config keeps `target: ${names_target:...}` as Hydra composed it
            config = OmegaConf.to_container(OmegaConf.load(saved), resolve=True) if saved.is_file() else None
            by_counting = run["metrics"].get("steps") == 0
            run["hparams"] = None if config is None else experiment_hparams(config, trained_by_counting=by_counting)
    return [run["hparams"] for run in runs if run["hparams"] is not None]


def hparam_values(runs: list[dict], keys: list[str]) -> dict[str, list]:
    """Each key's values across the runs, for its HParams domain (makemore.dashboard.hparam_domain)."""
    logged = logged_hparams(runs)
    return {key: [hparams[key] for hparams in logged if key in hparams] for key in keys}


def differing_hparams(runs: list[dict]) -> set[str]:
    """The HParams keys whose values differ between runs (from their saved configs); a key some runs lack (a
    counting run's optimizer) differs only if it is a model's own option."""
    logged = logged_hparams(runs)
    keys = {k for hparams in logged for k in hparams if k != "model._target_"}

    def differs(key: str) -> bool:  # a model's own option differs from the models that lack it
        values = {str(h[key]) for h in logged if key in h}
        return len(values) > 1 or (key.startswith("model.") and any(key not in h for h in logged))

    return {k for k in keys if differs(k)}


class LeaderboardCallback(Callback):
    """At the end of every multirun, print and write the sweep's leaderboard, show it in TensorBoard, and refresh
    the view the sweep joins (refresh_dashboard)."""

    started = False  # set once the sweep passed its checks (makemore.record.RunRecord runs first)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = True

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not self.started:  # refused before it began (Hydra 1.4 still ends it): no report, nothing written
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = [r for r in map(read_run, find_runs(sweep_dir)) if r is not None]
        try:
            timeline.mark("members ended")
            best = config.get("ensemble_best")  # a top-level key of train.yaml's; absent from a bare config
            ensembled = ensemble_of_the_best(sweep_dir, runs, best) if best else []
            write_report(sweep_dir)  # first: the sweep's summary in TensorBoard shows its files
            timeline.mark("leaderboard")
            if runs and writes_tensorboard(config.logger):
                write_sweep_summary(sweep_dir, runs)
                refresh_dashboard(dashboard_root(sweep_dir), [run["dir"] for run in runs] + ensembled)
        except Exception as error:
            refused = refused_write(error)
            if refused is None:
                raise
            refuse(
                MakemoreError(
                    f"{CannotWrite(refused.filename or sweep_dir, refused)}; the members' records are whole: make "
                    f"room, then write the leaderboard with {report_command(sweep_dir)}"
                )
            )
        refuse_unless_whole(runs, sweep_dir)


def ensemble_of_the_best(sweep_dir: Path, runs: list[dict], count: int) -> list[Path]:
    """`ensemble_best=K`: the sweep's K best finished runs (by dev) mixed with equal weights, recorded under
    `<sweep dir>/ensembles/`; a continued sweep whose best K are the runs of a record it holds keeps that one.
    Returns the new record's directory (none where it has one, or fewer than two runs finished)."""
    best = sorted((run for run in runs if dev_loss(run) < math.inf and not run.get("ensemble")), key=dev_loss)
    chosen = sorted(str(run["dir"].resolve()) for run in best[:count])
    kept = [run for run in runs if run.get("ensemble") and sorted(r["dir"] for r in run["ensemble"]["runs"]) == chosen]
    if len(chosen) < 2 or kept:
        return []
    try:
        members = load_members([run["dir"] for run in best[:count]])
    except MakemoreError as error:
        print(f"warning: no ensemble of the best {count} runs: {error}", file=sys.stderr)
        return []
    return [write_record(members, mixture_weights(members, "equal"), "equal", sweep_dir / ENSEMBLES)]


# A member that ended so is no result: its sweep exits 1 (diverged and pruned members are results of the sweep).
UNFINISHED = ("failed", "interrupted", "incomplete")


def refuse_unless_whole(runs: list[dict], sweep_dir: Path) -> None:
    """A sweep with no finished member, or with members that failed or were interrupted, ends in one line that
    counts them, names the leaderboard and, for interrupted ones, the command that continues them; exit 1
    (docs/sweeps.md, exit codes)."""
    board = sweep_dir / "leaderboard.md"
    if runs and not any(run["metrics"].get("status") == "ok" for run in runs):
        refuse(MakemoreError(f"every member of the sweep failed; their reasons are in {board}"))

    def config(run: dict) -> tuple:  # what a member ran, but its Optuna trial's number
        return tuple(sorted((k, v) for k, v in run["overrides"].items() if k != "trial"))

    finished = {config(run) for run in runs if run["metrics"].get("status") not in UNFINISHED}
    # an interrupted Optuna trial is queued again under a new number: once that one ends, the first is no failure;
    # nor is a member stopped before Hydra wrote its record (its trial, too, runs again under a new number)
    candidates = [r for r in runs if config(r) not in finished and (r["dir"] / OVERRIDES).is_file()]
    unfinished = [status for r in candidates if (status := final_status(r["dir"])) in UNFINISHED]
    if not unfinished:
        return
    counts = ", ".join(f"{unfinished.count(status)} {status}" for status in UNFINISHED if status in unfinished)
    goes_on = f"; continue it with: {continue_command(str(sweep_dir))}" if set(unfinished) - {"failed"} else ""
    refuse(
        MakemoreError(
            f"{len(unfinished)} of {len(runs)} members of the sweep did not finish ({counts}); "
            f"the reasons are in {board}{goes_on}"
        )
    )


def final_status(run_dir: Path) -> str | None:
    """A member's status as it stands now, or None while another process (of a shared Optuna study) trains it:
    asked in that order, since a member writes its metrics before it lets go of its lock."""
    if lock.busy(run_dir):
        return None
    return (read_metrics(run_dir) or {}).get("status", "incomplete")


class LrFinderCallback(Callback):
    """At the end of the lr_finder sweep, plot loss against lr for its run."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        for run_dir in find_runs(sweep_dir):
            if (run_dir / HISTORY).exists():
                write_lr_finder(run_dir, sweep_dir)


def main(root: str, eval_data: str | None = None) -> int:
    """`python sweep.py report=<dir> [eval_data=FILE]`: the leaderboard of every run under dir, with a column for
    each model's loss on FILE."""
    path = Path(root)
    if not path.is_dir():
        print(f"error: no directory {path}; report=<a sweep directory, or outputs>", file=sys.stderr)
        return 1
    try:
        write_report(path, rewrite=False, eval_data=Path(eval_data) if eval_data else None)
    except MakemoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
