"""The run record contract: refusals before anything is written, reruns that record what ran, printed commands
that work when pasted into bash, and every bad value as one `error:` line."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from helpers import ROOT, interrupted_once, read_metrics, run_bash, run_script, run_train, tree_hashes

TINY = ["steps=20", "eval_interval=10", "log_interval=10", "progress=false", "samples=2"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def printed_command(stderr: str, after: str) -> str:
    """The command a message printed, from `after` to the end of its line."""
    line = next(line for line in stderr.splitlines() if after in line)
    return line[line.index(after) + len(after) :].strip()


@pytest.mark.slow
def test_no_command_changes_a_finished_run(project):
    victim = project / "outputs" / "victim"
    assert run_train(victim, "model=trigram_count", cwd=project).returncode == 0
    before = tree_hashes(victim)
    attempts = [
        ["model=additive", "steps=20", f"hydra.run.dir={victim}"],  # another run into it
        ["model.emb=0", f"hydra.run.dir={victim}"],  # a refused run into it
        [f"rerun={victim}", f"hydra.run.dir={victim}"],  # its own rerun into it
        [f"resume={victim}"],  # resuming a finished run
        ["-m", "seed=1,2", *TINY, f"hydra.sweep.dir={victim}"],  # a sweep into it
    ]
    for args in attempts:
        result = run_script(str(project / "train.py"), *args, cwd=project)
        assert result.returncode == 1 and len(error_lines(result.stderr)) == 1, (args, result.stderr[-500:])
    report = run_script(str(project / "sweep.py"), f"report={victim}", cwd=project)
    assert report.returncode == 0 and "not written" in report.stdout
    sample = subprocess.run(
        [sys.executable, "-m", "makemore.sample", str(victim), "-o", str(victim / "samples.txt")],
        capture_output=True,
        text=True,
    )
    assert sample.returncode == 1 and "inside the run directory" in sample.stderr
    assert tree_hashes(victim) == before


@pytest.mark.slow
def test_printed_rerun_commands_work_for_sweep_members(project):
    result = run_script(str(project / "train.py"), "-m", "model=additive,mlp", "seed=3,4", *TINY, cwd=project)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = next((project / "outputs" / "multirun").glob("*/*"))
    rows = csv_rows(sweep_dir / "leaderboard.csv")
    assert all(" " in row["run"] for row in rows)  # member names that need quoting: `additive s3`
    for row in rows:
        rerun = run_bash(row["rerun"], cwd=project)  # exactly as printed
        assert rerun.returncode == 0, (row["rerun"], rerun.stderr[-1000:])
        assert f"dev {row['dev']}" in rerun.stdout


def dated_runs(project: Path) -> list[Path]:
    """Run directories under the default outputs/<date>/ of a project copy."""
    return sorted((project / "outputs").glob("[0-9]*/*"))


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_rerun_records_the_config_that_ran_and_stands_alone(project, tiny_corpus):
    source = project / "outputs" / "source"
    assert (
        run_train(
            source, "model=trigram_count", "model.alpha=0.5", f"data.path={tiny_corpus}", *TINY, cwd=project
        ).returncode
        == 0
    )
    first = run_bash(f"python train.py rerun={source}", cwd=project)
    assert first.returncode == 0, first.stderr[-1000:]
    [rerun] = dated_runs(project)
    assert "trigram_count" in rerun.name
    saved = yaml.safe_load((rerun / ".hydra" / "config.yaml").read_text())
    original = yaml.safe_load((source / ".hydra" / "config.yaml").read_text())
    assert saved["model"] == original["model"] and saved["data"] == original["data"]
    assert saved["model"]["name"] == "trigram_count" and saved["data"]["path"] == str(tiny_corpus)
    assert saved["rerun"] == str(source)  # lineage, not needed to rerun it
    assert yaml.safe_load((rerun / ".hydra" / "overrides.yaml").read_text())[0] == "model=trigram_count"
    events = EventAccumulator(str(rerun))
    events.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    )
    assert start.session_start_info.hparams["model.name"].string_value == "trigram_count"

    shutil.rmtree(source)  # a rerun of the rerun needs nothing of the first run
    second = run_bash(f"python train.py rerun={rerun}", cwd=project)
    assert second.returncode == 0, second.stderr[-1000:]
    [third] = [d for d in dated_runs(project) if d != rerun]
    losses = [[read_metrics(d)[f"{s}_loss"] for s in ("train", "dev", "test")] for d in (rerun, third)]
    assert losses[0] == losses[1]
    report = run_script(str(project / "sweep.py"), f"report={project / 'outputs'}", cwd=project)
    assert report.returncode == 0 and "trigram_count" in report.stdout

    watched = run_bash(f"python train.py rerun={rerun} logger=none samples=3 progress=false", cwd=project)
    assert watched.returncode == 0, watched.stderr[-1000:]  # how a rerun is watched may change; its record says so
    [fourth] = [d for d in dated_runs(project) if d not in (rerun, third)]
    saved = yaml.safe_load((fourth / ".hydra" / "config.yaml").read_text())
    assert saved["logger"] == {} and saved["samples"] == 3 and saved["progress"] is False
    assert not list(fourth.glob("events.out.tfevents.*")) and len((fourth / "samples.txt").read_text().split()) == 3
    assert [read_metrics(fourth)[f"{s}_loss"] for s in ("train", "dev", "test")] == losses[0]


@pytest.mark.slow
def test_resume_refuses_what_it_cannot_continue_without_writing(project, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    finished = project / "outputs" / "finished"
    assert run_train(finished, "model=bigram_count", *TINY, cwd=project).returncode == 0
    no_checkpoint = project / "outputs" / "no_checkpoint"
    assert run_train(no_checkpoint, "model=bigram_count", *TINY, cwd=project).returncode == 0
    (no_checkpoint / "metrics.json").unlink()  # as if killed before its first checkpoint
    cases = {
        tmp_path / "nonexistent": "not a run directory",
        empty: "not a run directory",
        finished: "already finished",
        no_checkpoint: "no checkpoint.pt",
    }
    for target, message in cases.items():
        before = tree_hashes(tmp_path)
        result = run_script(str(project / "train.py"), f"resume={target}", cwd=project)
        assert result.returncode == 1 and message in error_lines(result.stderr)[0], result.stderr[-500:]
        assert tree_hashes(tmp_path) == before and not (tmp_path / "nonexistent").exists()
        if target in (finished, no_checkpoint):  # both print the command that runs it again
            again = run_bash(printed_command(result.stderr, "with "), cwd=project)
            assert again.returncode == 0, again.stderr[-500:]


@pytest.mark.slow
@pytest.mark.parametrize("data", [".", ".|", ".|@%_+:/"])
def test_the_suggested_boundary_pastes_into_bash(project, tmp_path, data):
    path = tmp_path / "clash.txt"
    path.write_text("\n".join(["ab" + data, "ba", "abc", "cab"] * 8), encoding="utf-8")
    result = run_script(str(project / "train.py"), f"data.path={path}", *TINY, cwd=project)
    assert result.returncode == 1
    suggestion = printed_command(result.stderr, "e.g. ")
    pasted = run_bash(f"python train.py data.path={path} {' '.join(TINY)} {suggestion}", cwd=project)
    assert pasted.returncode == 0, (suggestion, pasted.stderr[-500:])


# Every value a user might type wrongly: (overrides, the key the one error line must name).
BAD_VALUES = [
    (["model.block_size=abc"], "model.block_size"),
    (["model.block_size=1.5"], "model.block_size"),
    (["model=trigram_table", "model.block_size=100000"], "block_size"),
    (["model.block_size=100000"], "block_size"),
    (["optim.lr=abc"], "optim.lr"),
    (["optim.betas=[2,2]"], "optim.betas"),
    (["optim=sgd", "optim.momentum=-1"], "optim.momentum"),
    (["optim.weight_decay=-1"], "optim.weight_decay"),
    (["data.fractions=0.8"], "data.fractions"),
    (["data.fractions=[a,b,c]"], "data.fractions"),
    (["data.fractions=[0.5,0.5,0.5]"], "data.fractions"),
    (["seed=abc"], "seed"),
    (["seed=1.5"], "seed"),
    (["seed=9223372036854775808"], "seed"),
    (["label_smoothing=2"], "label_smoothing"),
    (["samples=abc"], "samples"),
    (["target=abc"], "target"),
    (["model.norm=batch", "batch_size=1"], "batch_size"),
    (["data.boundary=0"], "data.boundary"),
    (["data.boundary=null"], "data.boundary"),
    (["optim=sgd", "optim.schedule=cosine"], "optim.schedule"),
    (["schedule=cosine", "schedule.warmup=2"], "schedule.warmup"),
    (["model.dropout=abc"], "model.dropout"),
    (["model=trigram_count", "model.alpha=abc"], "model.alpha"),
    (["steps=-1"], "steps"),
    (["steps=1e5"], "steps"),
    (["device=gpu"], "device"),
    (["progress=maybe"], "progress"),
    (["+logger.stdout._target_=nowhere.StdoutLogger"], "logger.stdout._target_"),
    (["model=transformer9000"], "model/transformer9000"),
    (["+model.colour=red"], "model.colour"),
    (["data.path=/nonexistent/names.txt"], "/nonexistent/names.txt"),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, key", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_every_bad_value_is_one_error_line_and_writes_nothing(project, overrides, key):
    result = run_script(str(project / "train.py"), "progress=false", *overrides, cwd=project)
    assert result.returncode == 1, result.stderr[-800:]
    assert "Traceback" not in result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and key in errors[0], result.stderr[-800:]
    assert sorted(p.name for p in project.iterdir()) == ["conf", "sweep.py", "train.py"]  # no outputs/


@pytest.mark.slow
def test_an_unreadable_data_file_is_one_error_line(project, tmp_path):
    data = tmp_path / "secret.txt"
    data.write_text("ab\nba\ncab\n" * 10)
    data.chmod(0)
    # Root reads any file; without the capabilities that let it, root meets permissions as a user does.
    as_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    result = subprocess.run(
        [*as_user, sys.executable, "train.py", f"data.path={data}", "progress=false"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"error: cannot read data file {data} (Permission denied); check its "
        "permissions, or pass data.path=<a UTF-8 text file with one item per line>"
    ]
    assert not (project / "outputs").exists()


@pytest.mark.slow
def test_a_sweep_whose_members_all_fail_exits_non_zero(project):
    result = run_script(str(project / "train.py"), "-m", "model.emb=0,-1", *TINY, cwd=project)
    assert result.returncode == 1
    assert "every member of the sweep failed" in error_lines(result.stderr)[-1]
    assert "leaderboard of 2 runs" in result.stdout


@pytest.mark.slow
def test_interrupt_hint_pastes_into_bash_for_a_path_that_needs_quoting(tmp_path):
    run_dir = tmp_path / "run a=1,b"  # '=', ',' and a space: Hydra and bash would both misread it unquoted
    args = [str(ROOT / "train.py"), f'hydra.run.dir="{run_dir}"', "steps=3000", "checkpoint_interval=200"]
    stderr = interrupted_once([*args, "progress=false", "logger=none"], tmp_path, (run_dir / "checkpoint.pt").exists)
    command = printed_command(stderr, "continue with ")
    assert re.fullmatch(r"python train\.py '.*'", command)
    resumed = run_bash(command.replace("python train.py", f"python {ROOT / 'train.py'}"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert read_metrics(run_dir)["status"] == "ok" and read_metrics(run_dir)["steps"] == 3000


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["rerun=outputs/x", "seed=3"], "rerun= takes the saved config as it is; drop the other overrides seed=3"),
        (["resume=outputs/x", "model.emb=4"], "resume= takes the saved config as it is; drop the other overrides"),
        (["-m", "resume=outputs/x"], "rerun= and resume= take one run at a time; drop -m"),
    ],
)
def test_rerun_and_resume_take_the_saved_config_as_it_is(project, args, message):
    result = run_script(str(project / "train.py"), *args, cwd=project)
    errors = error_lines(result.stderr)
    assert result.returncode == 1 and len(errors) == 1 and message in errors[0], result.stderr[-500:]
    assert not (project / "outputs").exists()
