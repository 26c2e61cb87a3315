"""hydra/sweeper=optuna: our sweeper on current Optuna, pruning, studies in the sweep directory that resume
and that several processes share. Real sweep.py processes, real signals, Optuna's real journal storage."""

import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from makemore.rundir import find_runs, read_history, read_overrides
from makemore.search import JOURNAL, open_storage, storage_url
from makemore.shell import hydra_value

from helpers import ROOT, read_metrics, run_bash, run_script, run_train, tree_hashes

QUICK = [
    "sweep=optuna_mlp",
    "steps=200",
    "eval_interval=50",
    "log_interval=50",
    "progress=false",
    "samples=5",
    "logger=none",
]


def sweep(sweep_dir, *args):
    result = run_script(str(ROOT / "sweep.py"), *QUICK, *args, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def load(sweep_dir, name="optuna_mlp"):
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(storage_url(None, sweep_dir)))


def test_the_plugin_we_depend_on_is_current_optuna_not_hydra_optuna_sweeper():
    from importlib import metadata

    import optuna

    assert int(optuna.__version__.split(".")[0]) >= 4
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("hydra-optuna-sweeper")


def test_search_space_syntax_maps_to_optuna_distributions():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.makemore_optuna.optuna_sweeper import distribution

    parse = OverridesParser.create().parse_override
    assert distribution(parse("a=range(4, 24, step=2)")) == IntDistribution(4, 22, step=2)  # stop excluded, as in Hydra
    assert distribution(parse("a=range(2, 6)")) == IntDistribution(2, 5)
    assert distribution(parse("a=tag(log, interval(0.002, 0.05))")) == FloatDistribution(0.002, 0.05, log=True)
    assert distribution(parse("a=interval(1, 9)")) == FloatDistribution(1.0, 9.0)  # Hydra's interval is of floats
    assert distribution(parse("a=tag(int, log, interval(16, 512))")) == IntDistribution(16, 512, log=True)
    assert distribution(parse("a=choice(mlp, additive)")) == CategoricalDistribution(["mlp", "additive"])
    assert distribution(parse("a=0.1,0.2")) == CategoricalDistribution(["0.1", "0.2"])


def trial_runs(sweep_dir) -> dict:
    """Each trial's run directory by trial number: a trial's name starts with it (`t3 emb=12 ...`)."""
    return {int(d.name.split()[0].removeprefix("t")): d for d in find_runs(sweep_dir)}


@pytest.mark.slow
def test_optuna_mlp_runs_ranks_and_keeps_its_study_in_a_journal_in_the_sweep_dir(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = sweep(sweep_dir, "hydra.sweeper.n_trials=3")
    assert (sweep_dir / JOURNAL).is_file()
    study = load(sweep_dir)
    runs = trial_runs(sweep_dir)
    assert sorted(runs) == [t.number for t in study.trials] == [0, 1, 2]
    for trial in study.trials:  # Optuna's value is the run's own final dev loss, and its params the run's config
        assert trial.value == pytest.approx(read_metrics(runs[trial.number])["dev_loss"])
        short = {k.rpartition(".")[2]: v for k, v in trial.params.items() if k != "optim.lr"}
        assert all(f"{k}={v}" in runs[trial.number].name.split() for k, v in short.items())
    assert "leaderboard of 3 runs" in result.stdout
    results = (sweep_dir / "optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in results and "complete: 3" in results


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["hydra.sweeper.objectives=[dev_loss,size]"], "hydra.sweeper.objectives=['dev_loss', 'size'] is not allowed"),
        (["hydra.sweeper.objectives=[dev_loss,params]", "hydra/sweeper/pruner=median"], "a pruner cannot judge"),
        (["hydra.sweeper.objectives=[dev_loss,params]", "hydra.sweeper.confirm=2"], "confirm ranks one objective"),
        (["seed=interval(1,5)"], "runs each trial once per seed"),
    ],
)
def test_a_search_that_cannot_run_is_refused_before_it_writes(tmp_path, args, message):
    sweep_dir = tmp_path / "sweep"
    result = run_script(str(ROOT / "sweep.py"), *QUICK, *args, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not sweep_dir.exists()


@pytest.mark.slow
def test_optuna_sqlite_storage(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep(tmp_path / "sweep", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}")
    study = optuna.load_study(study_name="optuna_mlp", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_a_pruner_stops_losing_trials_and_the_leaderboard_says_at_which_step(tmp_path):
    import optuna

    sweep_dir = tmp_path / "sweep"
    sweep(
        sweep_dir, "hydra.sweeper.n_trials=8", "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2"
    )
    study = load(sweep_dir)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and len(study.trials) == 8
    runs = trial_runs(sweep_dir)
    leaderboard = (sweep_dir / "leaderboard.md").read_text()
    for trial in pruned:
        step = trial.user_attrs["pruned_at_step"]
        assert step == max(trial.intermediate_values) < 200  # stopped at its last report, before the end
        metrics = read_metrics(runs[trial.number])
        assert metrics["status"] == f"pruned at step {step}" and not (runs[trial.number] / "model.pt").exists()
        assert f"pruned at step {step}" in next(
            line for line in leaderboard.splitlines() if runs[trial.number].name in line
        )
    for trial in study.trials:  # every evaluation was reported: the dev loss of the weights' moving average
        assert sorted(trial.intermediate_values) == list(range(50, 50 * (len(trial.intermediate_values) + 1), 50))
        assert "ema_decay=0.98" in read_overrides(runs[trial.number])
        history = read_history(runs[trial.number])
        averaged = {int(row["step"]): float(row["loss/dev_ema"]) for row in history if row.get("loss/dev_ema")}
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.intermediate_values == {step: averaged[step] for step in trial.intermediate_values}


def start_sweep(sweep_dir, *args):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "sweep.py"), *QUICK, *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )


def wait_for(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_an_interrupted_optuna_sweep_resumes_with_its_finished_trials_kept(tmp_path):
    import optuna

    sweep_dir = tmp_path / "sweep"
    process = start_sweep(sweep_dir, "hydra.sweeper.n_trials=5", "steps=2000", "eval_interval=500")
    wait_for(lambda: len(list(sweep_dir.glob("*/metrics.json"))) >= 2)  # two trials finished, a third running
    # the third trial under way: its record written whole (a stop while Hydra writes it is a case of its own)
    wait_for(lambda: len(list(sweep_dir.glob("t2 */.hydra/provenance.json"))) == 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    finished = {
        d.name: tree_hashes(d)
        for d in sweep_dir.iterdir()
        if (d / "metrics.json").exists() and read_metrics(d)["status"] == "ok"
    }
    values = {t.number: t.value for t in load(sweep_dir).trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(finished) == len(values) >= 2
    last = stderr.strip().splitlines()[-1]
    assert "continue it with: " in last, stderr[-3000:]
    result = run_bash(last.split("continue it with: ")[1], ROOT)  # the printed command, pasted into bash
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(sweep_dir)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5
    assert all(study.trials[n].value == value for n, value in values.items())  # finished trials kept, not rerun
    assert all(tree_hashes(sweep_dir / name) == hashes for name, hashes in finished.items())
    interrupted = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(interrupted) == 1 and any(t.params == interrupted[0].params for t in complete)  # tried again


@pytest.mark.slow
def test_two_processes_share_one_study_without_losing_or_duplicating_a_trial(tmp_path):
    import optuna

    sweep_dir = tmp_path / "sweep"
    first = start_sweep(sweep_dir, "hydra.sweeper.n_trials=8")
    wait_for(lambda: (sweep_dir / JOURNAL).exists())
    second = start_sweep(sweep_dir, "hydra.sweeper.n_trials=8")
    for process in (first, second):
        _, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr[-3000:]
    study = load(sweep_dir)
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers))) and 8 <= len(numbers) <= 9  # a race may add one, never lose one
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    runs = trial_runs(sweep_dir)
    assert sorted(runs) == numbers  # one run directory per trial
    assert all(t.value == pytest.approx(read_metrics(runs[t.number])["dev_loss"]) for t in study.trials)
    assert len({t.user_attrs["owner"] for t in study.trials}) == 2  # both processes ran trials


@pytest.mark.slow
def test_a_trial_run_reruns_on_its_own(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep(sweep_dir, "hydra.sweeper.n_trials=1")
    (run,) = find_runs(sweep_dir)
    before = len(load(sweep_dir).trials)
    result = run_train(tmp_path / "again", f"rerun={hydra_value(str(run))}", "progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_metrics(tmp_path / "again")["dev_loss"] == read_metrics(run)["dev_loss"]
    assert OmegaConf.load(tmp_path / "again" / ".hydra" / "config.yaml").trial is None  # not part of the study
    assert len(load(sweep_dir).trials) == before
