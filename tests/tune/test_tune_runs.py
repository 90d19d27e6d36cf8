"""End to end: real tunings in real processes (tiny synthetic data, a few seconds per trial)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from cli_run import SRC, carrot_cli

pytestmark = pytest.mark.slow

VAL = ["data.val_split=fraction"]
TINY = [
    "data.name=synthetic",
    "data.options.num_superclasses=3",
    "data.options.classes_per_superclass=3",
    "data.options.train_per_class=12",
    "data.options.test_per_class=4",
    "data.options.image_size=16",
    "data.image_size=16",
    "train.batch_size=12",
    "train.k=4",
    "train.max_steps_per_epoch=3",
    "train.epochs=2",
    "train.device=cpu",
    "train.plots=false",
    "train.loggers=[]",
    *VAL,
]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CARROT_DEBUG", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return env


def _tune_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "carrot.cli", "tune", *map(str, args)]


def _tune(*args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _tune_cmd(*args), capture_output=True, text=True, env=_env(), timeout=timeout, check=False
    )


def _trials(out: Path, method: str, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    from carrot.tune.storage import open_storage

    url = storage or f"sqlite:///{out / 'optuna.db'}"
    study = optuna.load_study(study_name=f"carrot-tune-{method}", storage=open_storage(url))
    return study.get_trials()


def test_two_methods_three_trials_write_best_configs_that_train(tmp_path) -> None:
    out = tmp_path / "tune"
    done = _tune("--methods", "ce", "carrot", "--trials", 3, "--out", out, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("tune ")]
    assert sum(" trial " in line for line in lines) == 6  # one line per finished trial
    assert "tune carrot trial 2:" in done.stdout and "ETA" in done.stdout
    for method in ("ce", "carrot"):
        trials = _trials(out, method)
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3
        assert len({t.user_attrs["run_dir"] for t in trials}) == 3
        assert all((Path(t.user_attrs["run_dir"]) / "summary.json").is_file() for t in trials)
        assert (out / method / "best.yaml").is_file() and (out / method / "history.png").is_file()
    # the same sampler seed: both studies start from the same shared settings
    assert _trials(out, "ce")[0].params["train.lr"] == _trials(out, "carrot")[0].params["train.lr"]
    text = (out / "tune.md").read_text()
    assert text.count("trials: 3 complete, 0 pruned, 0 failed (budget 3)") == 2
    # best.yaml trains as it is
    run = carrot_cli(
        "train", "--config", out / "carrot" / "best.yaml", f"output_dir={tmp_path / 'final'}"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "final" / "summary.json").is_file()
    # the paired comparison of the tuned configurations, on a seed other than the tuning seed
    bench = carrot_cli("bench", "accuracy", "--tuned", out, "--seeds", 1, "--out", tmp_path / "b")
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert "carrot (tuned)" in bench.stdout and "vs ce" in bench.stdout
    cell = json.loads(next((tmp_path / "b").glob("runs/*/carrot/s1/summary.json")).read_text())
    assert cell["seed"] == 1
    # a rerun of the finished command adds no trial
    again = _tune("--methods", "ce", "carrot", "--trials", 3, "--out", out, *TINY)
    assert again.returncode == 0 and " trial " not in again.stdout.split("tune: ")[0]
    assert len(_trials(out, "ce")) == 3


def test_non_finite_loss_is_a_failed_trial_with_its_reason(tmp_path, monkeypatch) -> None:
    """A loss that turns NaN (here forced: every setting the config accepts stays finite on
    this tiny run) is a failed trial with the trainer's reason, never a score."""
    import dataclasses

    from carrot.cli import main
    from carrot.methods.ce import CrossEntropy

    real = CrossEntropy.loss

    def nan_loss(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        return dataclasses.replace(result, loss=result.loss * float("nan"))

    monkeypatch.setattr(CrossEntropy, "loss", nan_loss)
    out = tmp_path / "tune"
    assert main(["tune", "--methods", "ce", "--trials", "1", "--out", str(out), *TINY]) == 0
    (trial,) = _trials(out, "ce")
    assert trial.state.name == "FAIL" and trial.value is None
    assert trial.user_attrs["fail_reason"].startswith("NonFiniteLossError")
    text = (out / "tune.md").read_text()
    assert "0 complete, 0 pruned, 1 failed" in text and "| 0 | failed |" in text
    assert not (out / "ce" / "best.yaml").exists()


def _trial_pruned_at_every_report(tmp_path: Path, epochs: int) -> optuna.trial.FrozenTrial:
    """One CE trial of ``epochs`` epochs under a pruner that prunes every report it may."""
    from carrot.train.config import load_config
    from carrot.tune.objective import run_trial
    from carrot.tune.space import method_space

    base = load_config(None, [*TINY, f"train.epochs={epochs}"])
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=101)
    )
    study.optimize(
        lambda t: run_trial(t, base, "ce", method_space("ce"), tmp_path, "top1"), n_trials=1
    )
    (trial,) = study.get_trials()
    return trial


def test_a_weak_trial_is_pruned_after_its_epoch(tmp_path) -> None:
    trial = _trial_pruned_at_every_report(tmp_path, epochs=3)
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at_epoch"] == 1
    run = Path(trial.user_attrs["run_dir"])
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]  # stopped after its first epoch ...
    assert (run / "checkpoints" / "last.pt").is_file()  # ... with the checkpoint saved


def test_a_trial_that_trained_to_its_last_epoch_is_complete_not_pruned(tmp_path) -> None:
    """The same pruner: at the last epoch the score is the trial's value, not a reason to prune."""
    trial = _trial_pruned_at_every_report(tmp_path, epochs=1)
    assert trial.state.name == "COMPLETE" and "pruned_at_epoch" not in trial.user_attrs
    assert trial.value == trial.intermediate_values[1]


def test_kill_9_mid_trial_then_the_same_command_counts_no_trial_twice(tmp_path) -> None:
    out = tmp_path / "tune"
    args = ["--methods", "ce", "--trials", 3, "--out", out, "--heartbeat", 1, *TINY]
    args += ["train.epochs=8", "train.max_steps_per_epoch=4"]
    proc = subprocess.Popen(
        _tune_cmd(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    metrics = out / "ce" / "trials" / "1" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
        assert proc.poll() is None, "the tuning ended before trial 1 was under way"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-trial 1: after its first epoch
    proc.wait()
    assert [t.state.name for t in _trials(out, "ce")][:2] == ["COMPLETE", "RUNNING"]
    done = _tune(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _trials(out, "ce")
    states = [t.state.name for t in trials]
    assert states[1] == "FAIL"  # the killed one: stale ...
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"  # ... retried, same settings
    assert retry[0].params == trials[1].params
    assert states.count("COMPLETE") == 3  # the budget: 3 counted trials, not 4
    text = (out / "tune.md").read_text()
    assert "trials: 3 complete, 0 pruned, 0 failed (budget 3)" in text
    assert "| 1 | stale, retried |" in text


def test_sigterm_mid_trial_stops_in_one_line_and_the_trial_is_retried(tmp_path) -> None:
    out = tmp_path / "tune"
    args = ["--methods", "ce", "--trials", 2, "--out", out, "--heartbeat", 1, *TINY]
    args += ["train.epochs=8", "train.max_steps_per_epoch=4"]
    proc = subprocess.Popen(
        _tune_cmd(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = out / "ce" / "trials" / "0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # mid-trial 0: it stops at its next step's checkpoint
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines() == [
        "carrot tune: trial 0 of ce stopped at a checkpoint; rerun the same command to continue."
    ]
    assert [t.state.name for t in _trials(out, "ce")] == ["RUNNING"]  # not a failure of it
    done = _tune(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _trials(out, "ce")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0  # trial 0 retried, only the retry counts


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_storage_and_never_run_the_same_trial(tmp_path, kind) -> None:
    """The journal (a file, no database), and the default SQLite file new to both workers (they
    raced to create its tables: one died on a UNIQUE constraint)."""
    out = tmp_path / "tune"
    storage = f"journal:{tmp_path / 'journal.log'}" if kind == "journal" else None
    args = ["--methods", "ce", "--trials", 4, "--jobs", 2, "--out", out]
    args += ["--storage", storage] if storage else []
    done = _tune(*args, *TINY, "train.epochs=3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "study" not in done.stderr, done.stderr  # no Optuna log lines, one line per trial
    trials = [
        t for t in _trials(out, "ce", storage) if not t.system_attrs.get("carrot_over_budget")
    ]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # distinct settings
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took trials
