"""Reliability: resume after real signals, divergence, checkpoint files, hostile data, concurrent runs."""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from makemore.checkpoint import load_checkpoint, save_atomic
from makemore.data import load_dataset, tokens_of
from makemore.errors import MakemoreError
from makemore.train import train_run

from helpers import ROOT, compose_config, read_metrics, run_train

RESUMABLE = [
    "steps=4000",
    "log_interval=100",
    "eval_interval=1000",
    "checkpoint_interval=200",
    "progress=false",
    "samples=3",
]


def start_train(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path):
    signum = signal.SIGINT  # Ctrl-C; SIGTERM takes the same path (test_sweeps stops a grid sweep with it)
    reference = train_run(compose_config(*RESUMABLE, "logger=none"), tmp_path / "reference")
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *RESUMABLE, "logger=all")
    wait_for(run_dir / "checkpoint.pt", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert f"python train.py resume={run_dir}" in stderr and "Traceback" not in stderr
    interrupted = read_metrics(run_dir)
    assert interrupted["status"] == "interrupted"
    step = load_checkpoint(run_dir / "checkpoint.pt", {"state"})["state"]["step"]
    assert 0 < step < 4000

    result = run_train(run_dir, f"resume={run_dir}")
    assert result.returncode == 0, result.stderr
    resumed = read_metrics(run_dir)
    for key in ("train_loss", "dev_loss", "test_loss"):
        assert resumed[key] == reference[key]  # to the last digit
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("resume") == 0  # the original record stays
    wandb_logs = sorted(p.name for p in run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_logs) == 2 and wandb_logs[0] == wandb_logs[1]  # the resumed run logs into the same W&B run id
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = [e.step for e in events.Scalars("loss/train")]
    assert steps == sorted(set(steps)) and steps[-1] == 4000  # one TensorBoard run, no step logged twice


@pytest.mark.slow
def test_a_run_killed_outright_resumes_from_its_last_periodic_checkpoint(tmp_path):
    reference = train_run(compose_config(*RESUMABLE, "logger=none"), tmp_path / "reference")
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *RESUMABLE, "logger=none")
    wait_for(run_dir / "checkpoint.pt", process)
    process.kill()  # SIGKILL: no handler runs, no checkpoint is written at the moment of death
    process.communicate(timeout=60)
    assert not (run_dir / "metrics.json").exists()
    result = run_train(run_dir, f"resume={run_dir}")
    assert result.returncode == 0, result.stderr[-500:]
    resumed = read_metrics(run_dir)
    assert [resumed[f"{s}_loss"] for s in ("train", "dev", "test")] == [
        reference[f"{s}_loss"] for s in ("train", "dev", "test")
    ]


@pytest.mark.slow
def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # AdamW's lr rises 10x every 455 steps (the lr finder's schedule) until the loss turns NaN, long after step 200.
    result = run_train(
        run_dir,
        "schedule=exponential",
        "optim.lr=0.001",
        "schedule.lr_end=1e8",
        "diverge_above=null",
        "steps=5000",
        "log_interval=50",
        "checkpoint_interval=200",
        "progress=false",
    )
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "loss became nan" in line or "loss became inf" in line
    assert "lower optim.lr" in line and "Traceback" not in result.stderr
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "diverged" and "step" in metrics["error"]
    stopped_at = int(metrics["error"].split("by step ")[1].split()[0])
    assert stopped_at % 50 == 0 and stopped_at < 5000
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt", {"state"})
    assert 0 < checkpoint["state"]["step"] < stopped_at
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert not (run_dir / "model.pt").exists()


def test_saves_are_atomic(tmp_path):
    path = tmp_path / "model.pt"
    save_atomic({"model": {"w": torch.ones(3)}}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        save_atomic({"model": {"w": torch.zeros(3)}, "bad": lambda: None}, path)  # fails mid-save
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


class NotAllowed:
    pass


@pytest.mark.parametrize(
    "content, quoted",  # the phrases the README quotes, each for its own kind of bad file
    [
        (b"\x00garbage" * 10, "is not a readable checkpoint"),
        ("pickle", "is not a readable checkpoint"),
        ("foreign", "is not a makemore checkpoint"),
        ("truncated", "is not a readable checkpoint"),
    ],
)
def test_corrupt_or_foreign_checkpoints_get_one_clear_line(tmp_path, content, quoted):
    path = tmp_path / "model.pt"
    if content == "pickle":
        torch.save({"model": NotAllowed(), "vocab": [], "config": {}}, path)  # weights_only refuses arbitrary objects
    elif content == "foreign":
        torch.save({"weights": torch.ones(2)}, path)
    elif content == "truncated":
        save_atomic({"model": {"w": torch.ones(1000)}, "vocab": ["."], "config": {}}, path)
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.write_bytes(content)
    with pytest.raises(MakemoreError) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value) and str(error.value).startswith(f"{path} {quoted}")


def test_a_checkpoint_is_refused_for_what_it_lacks_in_one_line(tmp_path):
    missing = tmp_path / "model.pt"
    for path in (missing, tmp_path):
        with pytest.raises(MakemoreError) as error:
            load_checkpoint(path)
        assert str(error.value) == f"no checkpoint at {path}; point at a run directory that holds model.pt"
    torch.save({"model": {}, "vocab": ["."], "config": {}}, missing)
    assert load_checkpoint(missing)["vocab"] == ["."]
    with pytest.raises(MakemoreError) as error:
        load_checkpoint(missing, {"state"})  # a final model.pt is no checkpoint to resume from
    assert (
        str(error.value)
        == f"{missing} is not a makemore checkpoint of this kind; point at a run directory made by train.py"
    )
    torch.save([1, 2], missing)
    with pytest.raises(MakemoreError, match="is not a makemore checkpoint of this kind"):
        load_checkpoint(missing)
    missing.write_bytes(b"")
    with pytest.raises(Exception) as torch_says:
        torch.load(missing, weights_only=True)
    with pytest.raises(MakemoreError) as error:
        load_checkpoint(missing)
    assert str(torch_says.value).strip() == ""  # torch says nothing of an empty file: its exception's name does
    reason = type(torch_says.value).__name__
    assert str(error.value) == f"{missing} is not a readable checkpoint ({reason}); rerun training to recreate it"
    torch.save({"model": NotAllowed(), "vocab": [], "config": {}}, missing)
    with pytest.raises(MakemoreError) as error:
        load_checkpoint(missing)
    reason = str(error.value).split(" is not a readable checkpoint (", 1)[1].rsplit("); rerun", 1)[0]
    assert len(reason) == 120  # torch's long refusal, cut to one short line


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path):
    from makemore.checkpoint import load_model
    from makemore.models import build_model

    config = compose_config("model.emb=4")
    model = build_model(config.model, 27)
    path = tmp_path / "model.pt"
    saved = {
        "model": model.state_dict(),
        "vocab": list(".abcdefghijklmnopqrstuvwxyz"),
        "config": OmegaConf.to_container(config),
    }
    save_atomic(saved, path)
    loaded, vocab, loaded_config = load_model(path)
    assert vocab.size == 27 and loaded_config["model"]["emb"] == 4 and not loaded.training
    save_atomic({**saved, "config": {**saved["config"], "model": {**saved["config"]["model"], "emb": 5}}}, path)
    with pytest.raises(MakemoreError) as error:
        load_model(path)
    assert str(error.value) == f"{path} does not match its own model config (Error(s) in loading state_dict for MLP:)"


def test_a_saved_checkpoint_is_an_ordinary_file_renamed_from_a_hidden_one_beside_it(tmp_path, monkeypatch):
    renames = []
    replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda source, target: (renames.append((Path(source), target)), replace(source, target))
    )
    umask = os.umask(0o022)
    try:
        save_atomic({"w": torch.ones(1)}, tmp_path / "model.pt")
        assert os.umask(0o022) == 0o022  # the umask is left as it was
    finally:
        os.umask(umask)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o644  # 0o666 under the umask, not mkstemp's 0o600
    [(temporary, target)] = renames
    assert target == tmp_path / "model.pt" and temporary.parent == tmp_path  # one filesystem: the rename is atomic
    assert temporary.name.startswith(".model.pt.") and temporary.name.endswith(
        ".tmp"
    )  # a leftover is hidden, and says whose


@pytest.mark.slow
def test_checkpoint_whose_vocabulary_differs_from_the_data_is_refused(tmp_path, tiny_corpus):
    run_dir = tmp_path / "run"
    diverging = [
        "schedule=exponential",
        "optim.lr=0.001",
        "schedule.lr_end=1e8",
        "steps=5000",
        "log_interval=50",
        "checkpoint_interval=100",
        "progress=false",
        f"data.path={tiny_corpus}",
    ]
    assert run_train(run_dir, *diverging).returncode == 1
    tiny_corpus.write_text(tiny_corpus.read_text() + "\nxyz")  # the data changed since
    result = run_train(run_dir, f"resume={run_dir}")
    assert result.returncode == 1 and f"error: data {tiny_corpus} changed: sha256 " in result.stderr
    accepted = run_train(run_dir, f"resume={run_dir}", "use_current_data=true")  # data that changed, accepted...
    assert accepted.returncode == 1 and "vocabulary differs" in accepted.stderr.strip().splitlines()[-1]  # ...but not


@pytest.mark.slow
def test_sampling_needs_only_model_pt_and_skips_the_shares_without_the_data(tmp_path, tiny_corpus):
    run_dir = tmp_path / "run"
    assert run_train(run_dir, "model=bigram_count", f"data.path={tiny_corpus}", "progress=false").returncode == 0

    def sample(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "makemore.sample", str(run_dir), "-n", "5", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    present = sample()
    assert present.returncode == 0 and "new" in present.stderr.splitlines()[-1]
    tiny_corpus.write_text(tiny_corpus.read_text() + "\nxyz")  # the data changed since
    changed = sample()
    assert changed.returncode == 0 and changed.stdout == present.stdout
    assert f"shares skipped: data {tiny_corpus} changed: sha256 " in changed.stderr
    tiny_corpus.unlink()  # and then it is gone
    gone = sample()
    assert gone.returncode == 0 and gone.stdout == present.stdout and "data file not found" in gone.stderr
    assert len(gone.stdout.splitlines()) == 5 and "shares skipped" in gone.stderr
    greedy = sample("--temperature", "1e-40")
    assert greedy.returncode == 0 and len(set(greedy.stdout.splitlines())) == 1  # a tiny temperature is greedy
    for out, message in ((tmp_path / "missing" / "x.txt", "no directory"), (tmp_path, "is a directory")):
        refused = sample("-o", str(out))
        assert refused.returncode == 1 and refused.stderr.startswith("error:") and message in refused.stderr


@pytest.mark.slow
def test_evaluation_of_a_20000_token_vocabulary_fits_in_3_gib(tmp_path):
    """Evaluation chunks are sized from the vocabulary: 65,536 rows of 20,001 logits would need 5.2 GB."""
    generator = torch.Generator().manual_seed(0)
    chars = [chr(0x4E00 + i) for i in range(20_000)]
    ids = torch.randint(len(chars), (15_000, 7), generator=generator).tolist()
    lines = ["".join(chars[i] for i in row) for row in ids] + ["".join(chars[i : i + 7]) for i in range(0, 20_000, 7)]
    path = tmp_path / "cjk.txt"
    path.write_text("\n".join(lines), encoding="utf-8")

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            f"hydra.run.dir={tmp_path / 'run'}",
            f"data.path={path}",
            "model.emb=2",
            "model.hidden=4",
            "steps=2",
            "batch_size=32",
            "logger=none",
            "samples=1",
            "progress=false",
        ],
        capture_output=True,
        text=True,
        preexec_fn=limit_memory,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-1000:]
    assert read_metrics(tmp_path / "run")["status"] == "ok"


lines = st.lists(st.text(st.characters(exclude_categories=("Cs",)), max_size=30), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=lines, crlf=st.booleans(), bom=st.booleans(), junk=st.binary(max_size=8))
@example(items=["0"] * 5 + ["0\U0001f3fb"], crlf=False, bom=False, junk=b"")  # a skin tone: one token with its base
def test_hostile_lines_build_a_consistent_dataset_or_a_clear_refusal(tmp_path, items, crlf, bom, junk):
    raw = ("\r\n" if crlf else "\n").join(items).encode("utf-8")
    raw = (b"\xef\xbb\xbf" if bom else b"") + raw + junk
    path = tmp_path / "hostile.txt"
    path.write_bytes(raw)
    try:
        dataset = load_dataset(str(path), block_size=2, boundary="\u2400")
    except MakemoreError as e:
        assert "\n" not in str(e) and str(e)
        return
    vocab = dataset.vocab
    for split_items in dataset.words.values():
        for item in split_items:
            assert item.strip() and "\n" not in item and vocab.boundary not in item
            assert vocab.decode(vocab.encode(item)) == item
    for split, split_items in dataset.words.items():
        assert len(dataset.Y[split]) == sum(len(tokens_of(item)) + 1 for item in split_items)  # emoji sequences: one
        assert int((dataset.Y[split] == 0).sum()) == len(split_items)


@pytest.mark.parametrize("content, message", [(bytes(range(256)) * 4, "binary"), (b"onlyone", "too few")])
def test_binary_and_one_line_files_end_in_a_clear_result(tmp_path, content, message):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(MakemoreError, match=message):
        load_dataset(str(path), 3)


@pytest.mark.slow
def test_runs_and_sweeps_started_together_never_share_a_directory(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text((ROOT / "train.py").read_text())
    subprocess.run(["cp", "-r", str(ROOT / "conf"), str(project / "conf")], check=True)
    args = ["steps=20", "progress=false", "samples=1", "model.hidden=8"]
    commands = [[sys.executable, "train.py", *args]] * 2 + [[sys.executable, "train.py", "-m", "seed=1,2", *args]] * 2
    processes = [subprocess.Popen(c, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    for p in processes:
        p.communicate(timeout=120)
        assert p.returncode == 0
    singles = list((project / "outputs").glob("[0-9]*/*"))  # outputs/<date>/<run>
    sweeps = list((project / "outputs" / "multirun").glob("*/*"))
    assert len(singles) == 2 and len(sweeps) == 2
    assert all(read_metrics(d)["status"] == "ok" for d in singles)
    assert all(len(list(s.glob("*/metrics.json"))) == 2 for s in sweeps)
