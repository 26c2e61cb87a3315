"""Paths a user walks, each as a real subprocess from default directories: models checked before anything is
written, refusals that create nothing, nothing the project wrote overwritten, a continued Optuna search, one-line
messages that name the cause and its fix, no warning floods. (That a parallel launcher keeps one sweep directory
from the default directories, the README's joblib and submitit commands check: tests/test_readme.py.)"""

import csv
import subprocess
from pathlib import Path

import pytest

from makemore.rundir import find_runs, read_overrides

from helpers import compose_config, group_options, read_metrics, run_bash, tree_hashes

BROKEN_MODELS = '''
"""Models that break the contract in one way each."""

import torch
from torch import nn


class ExtraClass(nn.Module):
    def __init__(self, vocab_size: int, block_size: int):
        super().__init__()
        self.out = nn.Embedding(vocab_size, vocab_size + 1)

    def forward(self, context):
        return self.out(context[:, -1])


class Flat(nn.Module):
    def __init__(self, vocab_size: int, block_size: int):
        super().__init__()
        self.out = nn.Embedding(vocab_size, 1)

    def forward(self, context):
        return self.out(context[:, -1])[:, 0]


class Frozen(nn.Module):
    def __init__(self, vocab_size: int, block_size: int):
        super().__init__()
        self.register_buffer("table", torch.zeros(vocab_size, vocab_size))

    def forward(self, context):
        return self.table[context[:, -1]]


class Wants(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, width: int):
        super().__init__()
'''


def in_project(project: Path, command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`command` in bash in the project copy, as a user types it there."""
    return run_bash(command, project, timeout=timeout)


def sweep_roots(project: Path) -> list[Path]:
    return sorted(p.parent for p in (project / "outputs").rglob("multirun.yaml"))


@pytest.fixture
def broken(project: Path) -> Path:
    (project / "broken_models.py").write_text(BROKEN_MODELS)
    configs = project / "my_conf" / "model"
    configs.mkdir(parents=True)
    for name, target in [
        ("extra", "ExtraClass"),
        ("flat", "Flat"),
        ("frozen", "Frozen"),
        ("typo", "Flatt"),
        ("wants", "Wants"),
    ]:
        (configs / f"{name}.yaml").write_text(f"_target_: broken_models.{target}\nname: {name}\nblock_size: 3\n")
    return project


@pytest.mark.slow
@pytest.mark.hydra_versions
@pytest.mark.parametrize(
    "model, message",
    [
        (
            "extra",
            "model extra (broken_models.ExtraClass): forward(context[2, block_size]) returned shape [2, 28], not "
            "[2, 27] (a logit per vocabulary entry, V=27); fix its output layer's size to vocab_size",
        ),
        (
            "flat",
            "model flat (broken_models.Flat): forward(context[2, block_size]) returned shape [2], not [2, 27] "
            "(a logit per vocabulary entry, V=27); fix its output layer's size to vocab_size",
        ),
        (
            "frozen",
            "model frozen (broken_models.Frozen) has no trainable parameter, so gradient descent cannot change "
            "it; register its weights as nn.Parameter (or nn.Embedding, nn.Linear, ...)",
        ),
        (
            "typo",
            "cannot build model typo from broken_models.Flatt: module broken_models has no 'Flatt'; check the "
            "spelling of model._target_ (module.Class)",
        ),
        (
            "wants",
            "cannot build model wants from broken_models.Wants: its constructor failed (TypeError: "
            "Wants.__init__() missing 1 required positional argument: 'width'); check the model's config keys "
            "against its __init__ parameters",
        ),
    ],
)
def test_a_model_that_breaks_the_contract_is_refused_in_one_line_before_any_directory(broken, model, message):
    result = in_project(broken, f"PYTHONPATH=. python train.py 'hydra.searchpath=[file://my_conf]' model={model}")
    assert (result.returncode, result.stderr) == (1, f"error: {message}\n")
    assert not (broken / "outputs").exists()


@pytest.mark.slow
@pytest.mark.hydra_versions
@pytest.mark.parametrize(
    "args, message",
    [
        ("device=cuda", "error: device=cuda but a CUDA GPU is not available here; use device=cpu or device=auto"),
        (
            "data.path=one.txt",
            "error: 1 items are too few to split [0.8, 0.1, 0.1] (got {'train': 0, 'dev': 0, 'test': 1}); add data",
        ),
    ],
)
def test_bad_input_found_only_by_the_run_creates_nothing(project, args, message):
    torch = pytest.importorskip("torch")
    if args == "device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (project / "one.txt").write_text("anna\n")
    result = in_project(project, f"python train.py {args}")
    assert (result.returncode, result.stderr) == (1, message + "\n")
    assert not (project / "outputs").exists()


@pytest.mark.slow
def test_a_value_hydra_cannot_read_gets_the_quoting_that_works(project):
    (project / "my data=x.txt").write_text("\n".join(["anna", "bob", "carl", "dave", "eve", "frank"] * 3))
    result = in_project(project, "python train.py 'data.path=my data=x.txt' steps=2")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    suggested = result.stderr.split("quote it for Hydra inside the shell's quotes: ")[1].strip()
    assert suggested == "'data.path=\"my data=x.txt\"'"
    pasted = in_project(project, f"python train.py {suggested} steps=2 progress=false logger=none")
    assert pasted.returncode == 0, pasted.stderr[-2000:]


@pytest.mark.slow
def test_help_works_for_both_entry_points_and_train_takes_every_group_it_lists(project):
    helped = {script: in_project(project, f"python {script} --help") for script in ("train.py", "sweep.py")}
    for result in helped.values():
        assert result.returncode == 0 and "== Configuration groups ==" in result.stdout, result.stderr
    listed = helped["train.py"].stdout.split("== Config ==")[0]
    groups = [line.split(":")[0] for line in listed.splitlines() if ": " in line and "," in line]
    assert "sweep" in groups
    for group in groups:  # each listed group composes for train.py (sweep: a named sweep, as with sweep.py)
        option = group_options(group)[0]
        assert "model" in compose_config(f"{group}={option}")
    composed = in_project(project, f"python train.py {group}={option} --cfg job")  # and from the command line
    assert composed.returncode == 0 and "model:" in composed.stdout, composed.stderr


@pytest.mark.slow
def test_the_sampler_never_overwrites_what_a_sweep_wrote(project):
    result = in_project(project, "python train.py -m model=bigram_count,trigram_count logger=none progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    [sweep_dir] = sweep_roots(project)
    member = next(p for p in sweep_dir.iterdir() if (p / "model.pt").is_file())
    before = tree_hashes(sweep_dir)
    for target in ("leaderboard.md", "multirun.yaml", "notes.txt"):
        refused = in_project(project, f"python -m makemore.sample {member} -n 3 -o {sweep_dir / target}")
        assert refused.returncode == 1 and refused.stderr.startswith(f"error: -o {sweep_dir / target}"), refused.stderr
    report = project / "outputs" / "leaderboard.md"
    in_project(project, "python sweep.py report=outputs")
    first_report = tree_hashes(project / "outputs")
    for root in ("outputs", str(sweep_dir)):  # a report, or a sweep's own leaderboard, is never rewritten by report=
        again = in_project(project, f"python sweep.py report={root}")
        assert again.returncode == 0 and "not written: " in again.stdout and "no command changes" in again.stdout
    assert tree_hashes(project / "outputs") == first_report
    refused = in_project(project, f"python -m makemore.sample {member} -n 3 -o {report}")
    assert refused.returncode == 1 and "no command changes" in refused.stderr
    assert tree_hashes(sweep_dir) == before
    nan = in_project(project, f"python -m makemore.sample {member} --temperature nan")
    assert (nan.returncode, nan.stderr) == (
        1,
        "error: temperature must be a finite number >= 0 (0 is greedy), got nan\n",
    )


@pytest.mark.slow
def test_a_continued_optuna_search_draws_new_parameters(project):
    command = (
        "python sweep.py sweep=optuna_mlp hydra.sweeper.n_trials={n} steps=30 eval_interval=10 progress=false "
        "logger=none hydra.sweep.dir=outputs/search"
    )
    first = in_project(project, command.format(n=1))  # as a search stopped after its first trial
    assert first.returncode == 0, first.stderr[-2000:]
    continued = in_project(project, command.format(n=3))
    assert continued.returncode == 0, continued.stderr[-2000:]
    searched = ("model.emb", "model.hidden", "model.block_size", "optim.lr")
    drawn = [[o for o in read_overrides(run) if o.split("=")[0] in searched] for run in find_runs(project / "outputs")]
    assert len(drawn) == 3 and len({tuple(sorted(params)) for params in drawn}) == 3


@pytest.mark.slow
def test_a_short_run_on_a_tiny_file_is_evaluated_before_its_end_and_warns_of_overfitting(project):
    (project / "twelve.txt").write_text(
        "\n".join(["anna", "bob", "carl", "dave", "eve", "frank", "gina", "hal", "ivy", "jo", "kim", "liam"])
    )
    result = in_project(project, "python train.py data.path=twelve.txt steps=300 progress=false logger=none")
    assert result.returncode == 0, result.stderr[-2000:]
    [run_dir] = [p.parent for p in (project / "outputs").rglob("metrics.json")]
    with open(run_dir / "history.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r["loss/dev"]] == [150, 300]
    metrics = read_metrics(run_dir)
    assert metrics["best_dev_step"] == 150 and "warning: overfitting: dev loss was" in result.stdout


@pytest.mark.slow
def test_a_cjk_vocabulary_draws_its_figures_with_at_most_one_line_about_glyphs(project):
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 300)]
    items = ["".join(chars[(i * 7 + j * 13) % 300] for j in range(2 + i % 3)) for i in range(3000)]
    (project / "cjk.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    result = in_project(project, "python train.py data.path=cjk.txt steps=4 model.emb=2 model.hidden=4 progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    told = [line for line in result.stderr.splitlines() if "lyph" in line]
    assert len(told) == 1 and told[0].startswith("note: 300 characters have no glyph"), result.stderr[-2000:]


def test_the_memory_refusal_names_the_part_that_takes_it(tmp_path, monkeypatch):
    from makemore import preflight
    from makemore.config import compose_train_config
    from makemore.errors import MakemoreError

    monkeypatch.setattr(preflight, "available_memory", lambda: 2**20)  # 1 MiB free
    with pytest.raises(
        MakemoreError, match="the examples take most of it: use a smaller data file or a shorter model.block_size$"
    ):
        preflight.prepare(compose_train_config())
    with pytest.raises(MakemoreError, match="make the model smaller"):
        preflight.prepare(compose_train_config("model=trigram_table", "model.block_size=4"))


@pytest.mark.slow
def test_a_run_stopped_by_a_bug_is_marked_failed_not_left_looking_unfinished(project):
    (project / "buggy.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Buggy(nn.Module):\n"
        "    def __init__(self, vocab_size, block_size):\n        super().__init__()\n"
        "        self.out = nn.Embedding(vocab_size, vocab_size)\n\n"
        "    def forward(self, context):\n        if self.training:\n            raise RuntimeError('a bug')\n"
        "        return self.out(context[:, -1])\n"
    )
    (project / "my_conf" / "model").mkdir(parents=True)
    (project / "my_conf" / "model" / "buggy.yaml").write_text("_target_: buggy.Buggy\nname: buggy\nblock_size: 2\n")
    result = in_project(project, "PYTHONPATH=. python train.py 'hydra.searchpath=[file://my_conf]' model=buggy")
    assert result.returncode == 1 and "RuntimeError: a bug" in result.stderr  # a bug keeps its traceback
    [run_dir] = [p.parent for p in (project / "outputs").rglob("metrics.json")]
    assert read_metrics(run_dir) == {"status": "failed", "error": "RuntimeError: a bug"}
    report = in_project(project, "python sweep.py report=outputs")
    assert "failed: RuntimeError: a bug" in report.stdout and "still running" not in report.stdout
