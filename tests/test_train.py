"""train.py end to end: run directory contents, TensorBoard read back, determinism, rerun, bad input."""

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from makemore import pictures
from makemore.checkpoint import load_model
from makemore.data import build_vocab
from makemore.loop import Diverged
from makemore.metrics import FINAL_METRICS, final_summary
from makemore.models import build_model
from makemore.train import train_run

from helpers import FAST, ROOT, compose_config, read_metrics, run_train


@pytest.mark.slow
def test_train_subprocess_writes_a_run_that_tensorboard_reads_back(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *FAST)
    assert result.returncode == 0, result.stderr
    assert "target 2.2: not met" in result.stdout.strip().splitlines()[-1]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "ok" and metrics["steps"] == 40 and metrics["params"] == 11_897
    assert {"train_seconds", "steps_per_second"} <= metrics.keys()

    events = EventAccumulator(str(run_dir))
    events.Reload()
    dev = events.Scalars("loss/dev")
    assert [e.step for e in dev] == [20, 40]
    for split in ("train", "dev", "test"):
        last = events.Scalars(f"loss/{split}")[-1]
        assert last.step == 40 and last.value == pytest.approx(metrics[f"{split}_loss"], rel=1e-6)
    assert len(events.Scalars("lr")) == 4
    hparams = events.PluginTagToContent("hparams")  # in the run's own directory, not a sub-run
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["model.emb"].number_value == 10
    assert "model/embeddings" in events.Tags()["images"]
    from makemore.plots import model_images  # the picture its own process drew: the pixels drawn here, from model.pt

    [picture] = events.Images("model/embeddings")
    drawn = np.asarray(Image.open(io.BytesIO(picture.encoded_image_string)))
    assert np.array_equal(drawn, model_images(*load_model(run_dir / "model.pt")[:2])[0]["model/embeddings"])

    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert len((run_dir / "samples.txt").read_text().splitlines()) == 5
    model, vocab, config = load_model(run_dir / "model.pt")  # weights_only=True inside
    assert vocab.size == 27 and config["model"]["emb"] == 10 and config["steps"] == 40


def a_model_and_its_checkpoint(directory):
    vocab = build_vocab(["emma", "olivia", "ava"])
    torch.manual_seed(0)
    model = build_model(compose_config("model=mlp").model, vocab.size)
    return model, vocab, directory / "model.pt"


def test_the_picture_process_draws_the_weights_the_run_saved_pixel_for_pixel(tmp_path):
    from makemore.plots import model_images

    model, vocab, path = a_model_and_its_checkpoint(tmp_path)
    process = pictures.PictureProcess(model, vocab, path)  # it keeps the weights of now: the run trains on
    with torch.no_grad():
        next(model.parameters()).mul_(-3.0)
    torch.save({"model": model.state_dict()}, path)
    drawn = process.draw()
    assert drawn is not None and process.pid == 0  # answered, and reaped
    images, missing = drawn
    here, _ = model_images(model, vocab)
    assert images.keys() == {"model/embeddings"} and not missing
    assert np.array_equal(images["model/embeddings"], here["model/embeddings"])


def test_a_picture_process_that_died_leaves_the_run_to_draw_them(tmp_path):
    model, vocab, path = a_model_and_its_checkpoint(tmp_path)
    torch.save({"model": model.state_dict()}, path)
    process = pictures.PictureProcess(model, vocab, path)
    os.kill(process.pid, signal.SIGKILL)
    images = pictures.draw(model, vocab, process)  # the process's answer is missing: drawn in this one
    assert images["model/embeddings"].shape[2] == 3 and process.pid == 0


def test_a_run_alone_on_the_cpu_forks_its_picture_process():
    asked = "import torch; from makemore.pictures import may_fork; print(may_fork(torch.device('cpu'), 1))"
    assert subprocess.run([sys.executable, "-c", asked], capture_output=True, text=True, cwd=ROOT).stdout == "True\n"
    assert not pictures.may_fork(torch.device("cpu"), 2)  # an OpenMP team would not survive the fork
    assert not pictures.may_fork(torch.device("meta"), 1)


@pytest.mark.parametrize("model", ["mlp", "trigram_table", "additive", "trigram_count"])
def test_same_config_and_seed_give_identical_losses(tmp_path, model, few_names):
    cfg = compose_config(f"model={model}", *FAST, "logger=none", few_names)
    first, second = train_run(cfg, tmp_path / "a"), train_run(cfg, tmp_path / "b")
    assert [first[f"{s}_loss"] for s in ("train", "dev", "test")] == [
        second[f"{s}_loss"] for s in ("train", "dev", "test")
    ]


@pytest.mark.slow
def test_a_sequence_model_trains_on_whole_items_with_batch_size_counted_in_next_characters(tmp_path):
    from makemore.data import load_dataset
    from makemore.models import loss_on

    metrics = train_run(
        compose_config(
            "model=gru",
            "steps=6",
            "eval_interval=3",
            "log_interval=3",
            "logger=none",
            "progress=false",
            "samples=2",
            "model.n_embd2=8",
        ),
        tmp_path / "a",
    )
    dataset = load_dataset(None, 16)
    items, examples = len(dataset.words["train"]), len(dataset.Y["train"])
    assert metrics["items_per_batch"] == round(256 * items / examples) == 36  # 7.1 next characters an item
    model, _, _ = load_model(tmp_path / "a" / "model.pt")  # the reported loss is the windows' loss
    assert loss_on(model, dataset.X["dev"], dataset.Y["dev"], 27) == pytest.approx(metrics["dev_loss"], abs=1e-6)
    windows = train_run(
        compose_config(
            "model=gru",
            "model.block_size=15",
            "steps=2",
            "logger=none",
            "progress=false",
            "samples=2",
            "model.n_embd2=8",
        ),
        tmp_path / "b",
    )
    assert "items_per_batch" not in windows  # the longest name's last window would be cut: windows, not items


def test_other_seed_gives_other_losses(tmp_path, few_names):
    first = train_run(compose_config(*FAST, "logger=none", few_names), tmp_path / "a")
    second = train_run(compose_config(*FAST, "logger=none", few_names, "seed=7"), tmp_path / "b")
    assert first["dev_loss"] != second["dev_loss"]


def test_counting_takes_no_optimizer_steps(tmp_path):
    metrics = train_run(compose_config("model=trigram_count", "logger=none", "progress=false"), tmp_path / "a")
    assert metrics["steps"] == 0 and metrics["dev_loss"] == pytest.approx(2.2225, abs=0.005)
    summarised = [m for m in FINAL_METRICS if m.tag]
    assert [m.key for m in summarised if m.key in metrics] == [m.key for m in summarised][:-1]  # no target met
    summary = final_summary({**metrics, "test_loss": None})  # as an infinite loss is written
    assert list(summary) == [m.tag for m in summarised][:-1] and summary["loss/test"] == math.inf
    assert summary["run/target_met"] == 0.0 and summary["run/params"] == 27**3


@pytest.mark.slow
def test_documented_rerun_survives_changed_defaults(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "train.py", project)
    shutil.copytree(ROOT / "conf", project / "conf")
    original = project / "outputs" / "original"
    assert run_train(original, "model=mlp", "model.hidden=32", *FAST, cwd=project).returncode == 0
    # Change the config tree the original run was composed from: another optimizer, another seed.
    tree = (project / "conf" / "train.yaml").read_text().replace("optim: adamw", "optim: sgd")
    (project / "conf" / "train.yaml").write_text(tree.replace("\nhydra:", "\nseed: 5\nhydra:", 1))
    again = project / "outputs" / "again"
    result = run_train(again, f"rerun={original}", cwd=project)
    assert result.returncode == 0, result.stderr
    before, after = read_metrics(original), read_metrics(again)
    assert [before[k] for k in ("train_loss", "dev_loss", "test_loss", "params")] == [
        after[k] for k in ("train_loss", "dev_loss", "test_loss", "params")
    ]
    assert torch.equal(
        torch.load(original / "model.pt", weights_only=True)["model"]["embedding.weight"],
        torch.load(again / "model.pt", weights_only=True)["model"]["embedding.weight"],
    )


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (lambda t: ["data.path=" + str(t / "missing.txt")], "data file not found"),
        (lambda t: ["data.path=" + str(write(t / "empty.txt", b""))], "has no items"),
        (lambda t: ["data.path=" + str(write(t / "dots.txt", b"a.b\nc\nd\ne\nf\ng\nh\ni\nj\nk"))], "data.boundary="),
        (lambda t: ["model.emb=0"], "model.emb must be a positive integer"),
        (lambda t: ["model.hidden=-5"], "model.hidden must be a positive integer"),
        (lambda t: ["model=trigram_table", "model.block_size=5"], "GiB"),
        (lambda t: ["model.hidden=2000000", "model.layers=2"], "GiB to train but only"),
        (lambda t: ["steps=-1"], "steps must be an integer"),
        (lambda t: ["model=transformer9000"], "model/transformer9000"),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_failing_exit(tmp_path, args, message):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *FAST, *args(tmp_path))
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (run_dir / "model.pt").exists()
    if (run_dir / "metrics.json").exists():
        assert read_metrics(run_dir)["status"] == "failed"


def test_diverging_to_a_huge_finite_loss_is_divergence(tmp_path, few_names):
    with pytest.raises(Diverged, match="above diverge_above=100"):
        train_run(
            compose_config(
                "optim=sgd", "optim.lr=1e6", "steps=300", "log_interval=1", "progress=false", "logger=none", few_names
            ),
            tmp_path / "sgd",
        )
    with pytest.raises(Diverged, match="above diverge_above=100"):
        train_run(
            compose_config("optim=full_batch", "log_interval=1", "progress=false", "logger=none", few_names),
            tmp_path / "full_batch",
        )


def test_lecture_2s_randn_start_is_not_divergence(tmp_path, few_names):
    metrics = train_run(
        compose_config(
            "experiment=karpathy_mlp",
            "steps=200",
            "log_interval=1",
            "eval_interval=200",
            "progress=false",
            "logger=none",
            "checkpoint_interval=0",
            few_names,
        ),
        tmp_path,
    )
    first = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok" and first["status"] == "ok"
    with open(tmp_path / "history.csv") as f:
        assert 20 < float(f.readlines()[1].split(",")[1]) < 100  # ~27 nats at the first step, under the ceiling


def test_infinite_losses_are_written_as_valid_json(tmp_path):
    train_run(compose_config("model=trigram_count", "model.alpha=0", "logger=none", "progress=false"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert metrics["dev_loss"] is None and metrics["test_loss"] is None and "infinite" in metrics["note"]
    assert metrics["status"] == "ok" and math.isfinite(metrics["train_loss"])


@pytest.mark.slow
def test_history_and_time_to_target_are_recorded(tmp_path):
    metrics = train_run(
        compose_config("steps=2000", "eval_interval=500", "log_interval=250", "progress=false", "logger=none"), tmp_path
    )
    with open(tmp_path / "history.csv") as f:
        rows = [line.strip().split(",") for line in f]
    assert rows[0] == ["step", "loss/train", "loss/dev", "lr"]
    assert [int(r[0]) for r in rows[1:]] == list(range(250, 2001, 250))
    assert [bool(r[2]) for r in rows[1:]] == [s % 500 == 0 for s in range(250, 2001, 250)]  # the last: the final
    dev = {int(r[0]): float(r[2]) for r in rows[1:] if r[2]}
    assert dev[2000] == metrics["dev_loss"]
    first_below = min(step for step, loss in dev.items() if loss < 2.2)
    assert metrics["step_to_target"] == first_below and 0 < metrics["seconds_to_target"] < metrics["train_seconds"]
