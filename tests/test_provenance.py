"""Provenance: a run records its data, code and environment; rerun= and resume= compare them with today's, and a
rerun ends with a verdict. The acceptance tests run real `python train.py` processes on real files, in a copy of
the project (a git repository of its own where git state matters)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore import provenance
from makemore.data import read_items, resolve_path
from makemore.rundir import CONFIG, PATCH, PROVENANCE, find_runs, write_json

from helpers import ROOT, interrupted_once, read_metrics, run_bash
from wandb_records import read_run as read_wandb_run

QUICK = "steps=200 eval_interval=100 log_interval=100 progress=false logger=none samples=5"


def record(sha: str = "a" * 64, items: int = 10, sources: dict | None = None, torch: str = "2.13.0") -> dict:
    return {
        "data": {"path": "words.txt", "sha256": sha, "bytes": 50, "items": items},
        "code": {
            "version": "0.1.0",
            "git": {"commit": "c" * 40, "dirty": False},
            "sources": sources or {"makemore/models.py": "1"},
            "user_model": None,
        },
        "environment": {"python": "3.11.7", "torch": torch, "device": "cpu", "threads": 1, "command": "python a"},
    }


def a_run(directory: Path, losses: tuple[float, float, float], saved: dict | None) -> Path:
    directory.mkdir(parents=True)
    write_json(directory / "metrics.json", {"status": "ok", **dict(zip(provenance.LOSSES, losses))})
    if saved is not None:
        provenance.write(directory, saved, "")
    return directory


def test_what_differs_is_named_one_line_per_difference():
    then, now = record(), record(sha="b" * 64, items=11, sources={"makemore/models.py": "2"}, torch="2.15.0")
    assert provenance.data_changes(then["data"], now["data"]) == [
        f"data words.txt changed: sha256 {'a' * 12} → {'b' * 12}, items 10 → 11"
    ]
    assert provenance.code_changes(then["code"], now["code"]) == [f"makemore/models.py changed since {'c' * 12}"]
    assert provenance.environment_changes(then["environment"], now["environment"]) == ["torch 2.13.0 → 2.15.0"]
    assert provenance.differences(then, then) == []


def test_added_and_removed_sources_and_a_user_models_file_are_named():
    then = {**record()["code"], "user_model": {"target": "m.M", "file": "/x/m.py", "sha256": "1"}}
    now = {**record()["code"], "sources": {"makemore/new.py": "1"}, "user_model": {**then["user_model"], "sha256": "2"}}
    assert provenance.code_changes({**then, "git": {"commit": None, "dirty": True}}, now) == [
        "makemore/models.py removed since the run (dirty)",
        "makemore/new.py added since the run (dirty)",
        "/x/m.py (model m.M) changed since the run",
    ]


@pytest.mark.parametrize(
    "losses, now, reproduced, starts",
    [
        ((2.0, 2.1, 2.2), record(), True, "reproduced: losses identical to {src} to the last digit"),
        ((2.0, 2.1, 2.2), record(torch="2.15.0"), False, "differs from {src} by its record (the losses are identical)"),
        ((2.0, 2.5, 2.2), record(torch="2.15.0"), False, "differs from {src} by dev 2.1 → 2.5; what differs: torch"),
        ((2.0, 2.5, 2.2), record(), False, "differs from {src} by dev 2.1 → 2.5 while nothing recorded differs"),
    ],
)
def test_the_verdict(tmp_path, losses, now, reproduced, starts):
    source = a_run(tmp_path / "src", (2.0, 2.1, 2.2), record())
    metrics = dict(zip(provenance.LOSSES, losses))
    ok, line = provenance.verdict(source, now, metrics)
    assert ok is reproduced and line.startswith(starts.format(src=source))


def test_the_verdict_on_a_run_without_provenance_or_without_losses(tmp_path):
    old = a_run(tmp_path / "old", (2.0, 2.1, 2.2), None)
    metrics = dict(zip(provenance.LOSSES, (2.0, 2.1, 2.2)))
    assert provenance.verdict(old, record(), metrics) == (
        False,
        f"losses identical to {old}, which carries no provenance: whether its data, code and environment matched "
        "can't be told",
    )
    (tmp_path / "gone").mkdir()
    assert provenance.verdict(tmp_path / "gone", record(), metrics)[1].startswith("no verdict: ")


def test_the_data_fingerprint_is_of_the_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_bytes(b"anna\n\nbob\r\n")
    assert provenance.data_fingerprint(str(path)) == {
        "path": str(path),
        "sha256": hashlib.sha256(b"anna\n\nbob\r\n").hexdigest(),
        "bytes": 11,
        "items": 2,
    }


def test_the_markdown_escapes_pipes():
    text = provenance.markdown({"environment": {"command": "python train.py 'a|b'"}})
    assert "| environment.command | python train.py 'a\\|b' |" in text.splitlines()


# --- real runs ---------------------------------------------------------------------------------------------------


@pytest.fixture
def words(project: Path) -> Path:
    """A data file of the first 1,000 built-in names, in the project."""
    path = project / "words.txt"
    path.write_text("\n".join(read_items(resolve_path(None))[:1000]), encoding="utf-8")
    return path


def same_characters_other_lines(path: Path) -> None:
    """Replace the file's lines with others that use the same characters (each name reversed)."""
    path.write_text("\n".join(item[::-1] for item in read_items(path)), encoding="utf-8")


def the_run(project: Path) -> Path:
    [run] = find_runs(project / "outputs")
    return run


def new_runs(project: Path, before: list[Path]) -> list[Path]:
    return [run for run in find_runs(project / "outputs") if run not in before]


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def pasted(result: subprocess.CompletedProcess) -> str:
    """The command a refusal prints after its colon, as a user pastes it."""
    return error_line(result).split("to train on it as it is now: ", 1)[1]


@pytest.mark.slow
def test_rerun_refuses_changed_data_and_the_printed_key_proceeds_and_is_recorded(project, words):
    made = run_bash(f"python train.py data.path=words.txt {QUICK}", project)
    assert made.returncode == 0, made.stderr[-2000:]
    source = the_run(project).relative_to(project)
    assert json.loads((project / source / PROVENANCE).read_text())["data"]["sha256"] == provenance.sha256_of(words)
    same_characters_other_lines(words)

    refused = run_bash(f"python train.py rerun={source}", project)
    assert refused.returncode == 1
    assert error_line(refused).startswith("error: data words.txt changed: sha256 ")
    assert pasted(refused) == f"python train.py rerun={source} use_current_data=true"
    assert new_runs(project, [project / source]) == []  # nothing written

    proceeded = run_bash(pasted(refused), project)
    assert proceeded.returncode == 0, proceeded.stderr[-2000:]
    [rerun] = new_runs(project, [project / source])
    assert "use_current_data: true" in (rerun / CONFIG).read_text()
    assert read_metrics(rerun)["reproduced"] is False
    assert read_metrics(rerun)["rerun_verdict"].startswith(f"differs from {source} by ")
    assert "what differs: data words.txt changed: sha256 " in read_metrics(rerun)["rerun_verdict"]


@pytest.mark.slow
def test_resume_refuses_changed_data_and_the_printed_key_proceeds(project, words):
    args = ["train.py", "data.path=words.txt", "steps=20000", "checkpoint_interval=100", "progress=false"]
    interrupted_once([*args, "logger=none"], project, lambda: bool(list(project.glob("outputs/*/*/checkpoint.pt"))))
    run = the_run(project).relative_to(project)
    same_characters_other_lines(words)

    refused = run_bash(f"python train.py resume={run}", project)
    assert refused.returncode == 1
    assert error_line(refused).startswith("error: data words.txt changed: sha256 ")
    assert read_metrics(project / run)["status"] == "interrupted" and (project / run / "checkpoint.pt").is_file()
    assert pasted(refused) == f"python train.py resume={run} use_current_data=true"


def copy_as_git_repository(tmp_path: Path) -> Path:
    """The project's code and config in a new git repository with one commit."""
    repo = tmp_path / "repo"
    for folder in ("makemore", "hydra_plugins", "conf"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for script in ("train.py", "sweep.py"):
        shutil.copy(ROOT / script, repo)
    (repo / ".gitignore").write_text("outputs/\n__pycache__/\n")
    git(repo, "init", "-q")
    commit(repo, "the project")
    return repo


def git(repo: Path, *args: str) -> str:
    environment = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    environment["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(["git", *args], cwd=repo, env=environment, capture_output=True, text=True, check=True)
    return done.stdout


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def warnings_of(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


@pytest.mark.slow
def test_git_state_a_dirty_patch_a_new_commits_warning_and_a_reproduced_rerun(tmp_path, few_names):
    repo = copy_as_git_repository(tmp_path)
    first = git(repo, "rev-parse", "HEAD").strip()
    with open(repo / "makemore" / "models" / "mlp.py", "a") as f:
        f.write("\n# an uncommitted change\n")

    made = run_bash(f"python train.py {few_names} {QUICK}", repo)
    assert made.returncode == 0, made.stderr[-2000:]
    source = the_run(repo)
    saved = json.loads((source / PROVENANCE).read_text())
    assert saved["code"]["git"] == {"commit": first, "dirty": True, "patch": PATCH}
    assert "+# an uncommitted change" in (source / PATCH).read_text()

    with open(repo / "makemore" / "loop.py", "a") as f:
        f.write("\n# a later commit\n")
    commit(repo, "a later change")  # commits mlp.py's change too: the same bytes as the run's
    rerun = run_bash(f"python train.py rerun={source.relative_to(repo)}", repo)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert warnings_of(rerun) == [f"warning: makemore/loop.py changed since {first[:12]} (dirty)"]
    [second] = new_runs(repo, [source])
    assert read_metrics(second)["rerun_verdict"].endswith(
        f"what differs: makemore/loop.py changed since {first[:12]} (dirty)"
    )

    again = run_bash(f"python train.py rerun={second.relative_to(repo)}", repo)
    assert again.returncode == 0, again.stderr[-2000:]
    assert warnings_of(again) == []
    assert f"rerun verdict: reproduced: losses identical to {second.relative_to(repo)}" in again.stdout
    [third] = new_runs(repo, [source, second])
    losses = ("train_loss", "dev_loss", "test_loss")
    assert [read_metrics(third)[k] for k in losses] == [read_metrics(second)[k] for k in losses]
    assert read_metrics(third)["reproduced"] is True


MODEL = '''from torch import nn


class LastCharacter(nn.Module):
    """Next-character logits from the last character of the context alone."""

    def __init__(self, vocab_size: int, block_size: int, scale: float = 1.0):
        super().__init__()
        self.logits = nn.Embedding(vocab_size, vocab_size)
        nn.init.normal_(self.logits.weight, std=scale)

    def forward(self, context):
        return self.logits(context[:, -1])
'''


@pytest.mark.slow
def test_a_user_models_file_edited_after_training_is_named_by_the_rerun(project, words):
    (project / "my_model.py").write_text(MODEL)
    (project / "my_conf" / "model").mkdir(parents=True)
    (project / "my_conf" / "model" / "last_char.yaml").write_text(
        "_target_: my_model.LastCharacter\nname: last_char\nblock_size: 2\n"
    )
    user = "PYTHONPATH=. python train.py 'hydra.searchpath=[file://my_conf]'"
    made = run_bash(f"{user} model=last_char data.path=words.txt {QUICK}", project)
    assert made.returncode == 0, made.stderr[-2000:]
    source = the_run(project).relative_to(project)
    (project / "my_model.py").write_text(MODEL.replace("alone.", "alone, edited."))

    rerun = run_bash(f"PYTHONPATH=. python train.py rerun={source}", project)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"warning: {project / 'my_model.py'} (model my_model.LastCharacter) changed since the run" in warnings_of(
        rerun
    )


@pytest.mark.slow
def test_diff_of_two_seeds_shows_the_seed_the_commands_and_the_losses_only(project, words):
    for seed in (1, 2):
        made = run_bash(f"python train.py data.path=words.txt seed={seed} {QUICK}", project)
        assert made.returncode == 0, made.stderr[-2000:]
    a, b = (run.relative_to(project) for run in find_runs(project / "outputs"))
    shown = run_bash(f"python -m makemore.diff {a} {b}", project)
    assert shown.returncode == 0, shown.stderr[-2000:]
    rows = [line.split(" | ") for line in shown.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    keys = {(row[0].lstrip("| "), row[1]) for row in rows[1:]}
    assert {key for section, key in keys if section == "config"} == {"seed"}
    assert {key for section, key in keys if section == "provenance"} == {"environment.command"}
    assert {("metrics", "train_loss"), ("metrics", "dev_loss"), ("metrics", "test_loss")} <= keys
    assert f"python train.py data.path=words.txt seed=1 {QUICK}" in shown.stdout


@pytest.mark.slow
def test_provenance_reaches_tensorboard_and_wandb(project, words):
    made = run_bash(f"python train.py data.path=words.txt {QUICK.replace('logger=none', 'logger=all')}", project)
    assert made.returncode == 0, made.stderr[-2000:]
    run = the_run(project)
    sha = provenance.sha256_of(words)
    events = EventAccumulator(str(run))
    events.Reload()
    [text] = events.Tensors("provenance/text_summary")
    assert f"| data.sha256 | {sha} |" in text.tensor_proto.string_val[0].decode()
    [log] = run.glob("wandb/offline-run-*/run-*.wandb")
    config = read_wandb_run(log)["config"]
    saved = config["provenance"].get("value", config["provenance"])
    assert saved["data"]["sha256"] == sha and saved["environment"]["command"].startswith("python train.py")


@pytest.mark.slow
def test_a_run_recorded_before_provenance_reruns_with_one_note(project, words):
    made = run_bash(f"python train.py data.path=words.txt {QUICK}", project)
    assert made.returncode == 0, made.stderr[-2000:]
    source = the_run(project)
    (source / PROVENANCE).unlink()  # as a run of an earlier version left it
    rerun = run_bash(f"python train.py rerun={source.relative_to(project)}", project)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    notes = [line for line in rerun.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {source.relative_to(project)} carries no provenance (it was recorded before makemore saved one): "
        "its data, code and environment can't be compared"
    ]
    assert "rerun verdict: losses identical to " in rerun.stdout
