"""train.py end to end: run directory contents, TensorBoard read back, determinism, rerun, bad input."""

import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import FAST, ROOT, compose_config, read_metrics, run_train
from makemore.checkpoint import load_model
from makemore.train import run


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
    assert "embeddings" in events.Tags()["images"]

    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert len((run_dir / "samples.txt").read_text().splitlines()) == 5
    model, vocab, config = load_model(run_dir / "model.pt")  # weights_only=True inside
    assert vocab.size == 27 and config["model"]["emb"] == 10 and config["steps"] == 40


@pytest.mark.parametrize("model", ["mlp", "trigram_table", "additive", "trigram_count"])
def test_same_config_and_seed_give_identical_losses(tmp_path, model, few_names):
    cfg = compose_config(f"model={model}", *FAST, "logger=none", few_names)
    first, second = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")
    assert [first[f"{s}_loss"] for s in ("train", "dev", "test")] == [second[f"{s}_loss"] for s in ("train", "dev", "test")]


@pytest.mark.slow
def test_a_sequence_model_trains_on_whole_items_with_batch_size_counted_in_next_characters(tmp_path):
    from makemore.data import load_dataset
    from makemore.models import loss_on

    metrics = run(compose_config("model=gru", "steps=6", "eval_interval=3", "log_interval=3", "logger=none",
                                 "progress=false", "samples=2", "model.n_embd2=8"), tmp_path / "a")
    dataset = load_dataset(None, 16)
    items, examples = len(dataset.words["train"]), len(dataset.Y["train"])
    assert metrics["items_per_batch"] == round(256 * items / examples) == 36  # 7.1 next characters an item
    model, _, _ = load_model(tmp_path / "a" / "model.pt")  # the reported loss is the windows' loss
    assert loss_on(model, dataset.X["dev"], dataset.Y["dev"], 27) == pytest.approx(metrics["dev_loss"], abs=1e-6)
    windows = run(compose_config("model=gru", "model.block_size=15", "steps=2", "logger=none", "progress=false",
                                 "samples=2", "model.n_embd2=8"), tmp_path / "b")
    assert "items_per_batch" not in windows  # the longest name's last window would be cut: windows, not items


def test_other_seed_gives_other_losses(tmp_path, few_names):
    first = run(compose_config(*FAST, "logger=none", few_names), tmp_path / "a")
    second = run(compose_config(*FAST, "logger=none", few_names, "seed=7"), tmp_path / "b")
    assert first["dev_loss"] != second["dev_loss"]


def test_counting_takes_no_optimizer_steps(tmp_path):
    metrics = run(compose_config("model=trigram_count", "logger=none", "progress=false"), tmp_path / "a")
    assert metrics["steps"] == 0 and metrics["dev_loss"] == pytest.approx(2.2225, abs=0.005)


@pytest.mark.slow
def test_documented_rerun_survives_changed_defaults(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "train.py", project)
    shutil.copytree(ROOT / "conf", project / "conf")
    original = project / "outputs" / "original"
    assert run_train(original, "model=mlp", "model.hidden=32", *FAST, cwd=project).returncode == 0
    # Change the defaults the original run was composed from.
    (project / "conf" / "model" / "mlp.yaml").write_text(
        (project / "conf" / "model" / "mlp.yaml").read_text().replace("emb: 10", "emb: 3")
    )
    (project / "conf" / "train.yaml").write_text((project / "conf" / "train.yaml").read_text().replace("seed: 42", "seed: 5"))
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
