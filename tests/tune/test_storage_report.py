"""The trial budget's counting (stale trials retried, never counted twice) and tune.md's
listing of complete, pruned and failed trials, on real SQLite storages."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from carrot.train.config import load_config
from carrot.tune.report import write_report
from carrot.tune.space import method_space
from carrot.tune.storage import (
    OVER_BUDGET,
    counted,
    open_storage,
    position,
    storage_url,
    study_name,
)
from carrot.tune.worker import TuneOptions

LR = FloatDistribution(1e-3, 0.2, log=True)


def _trial(state: TrialState, number_attrs: dict | None = None, **kw):
    value = kw.pop("value", None)
    return create_trial(
        state=state,
        value=value,
        params={"train.lr": 0.01},
        distributions={"train.lr": LR},
        system_attrs=number_attrs or {},
        **kw,
    )


def test_counting_leaves_out_retried_stale_and_over_budget_trials() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(TrialState.COMPLETE, value=1.0))  # 0
    study.add_trial(_trial(TrialState.FAIL))  # 1: went stale, retried as 3
    study.add_trial(_trial(TrialState.PRUNED, intermediate_values={1: 0.5}))  # 2
    study.add_trial(_trial(TrialState.WAITING, {"failed_trial": 1, "retry_history": [1]}))  # 3
    study.add_trial(_trial(TrialState.FAIL, {OVER_BUDGET: True}))  # 4
    study.add_trial(_trial(TrialState.FAIL))  # 5: a real failure
    trials = study.get_trials()
    assert counted(trials) == {"complete": 1, "pruned": 1, "fail": 1, "running": 0, "waiting": 1}
    # trial 3 (the retry) comes after 0 and 2 only: 1 is not counted, so it is within a budget of 3
    assert position(trials, 3) == 2
    assert position(trials, 5) == 3  # 0, 2, 3


def test_storage_urls(tmp_path) -> None:
    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    journal = open_storage(f"journal:{tmp_path / 'j.log'}")
    assert type(journal).__name__ == "JournalStorage"
    with pytest.raises(ValueError, match="database URL"):
        open_storage("not-a-url")


def test_tune_md_shows_pruned_and_failed_trials(tmp_path) -> None:
    base = load_config(None, ["train.epochs=2"])
    opts = TuneOptions(
        base=base,
        methods=("ce",),
        spaces={"ce": method_space("ce")},
        trials=4,
        out=tmp_path,
        storage=storage_url(None, tmp_path),
    )
    study = optuna.create_study(
        storage=open_storage(opts.storage), study_name=study_name("ce"), direction="maximize"
    )
    study.add_trial(_trial(TrialState.COMPLETE, value=71.5))
    study.add_trial(_trial(TrialState.PRUNED, user_attrs={"pruned_at_epoch": 1}))
    study.add_trial(
        _trial(TrialState.FAIL, user_attrs={"fail_reason": "NonFiniteLossError: loss=nan"})
    )
    study.add_trial(_trial(TrialState.COMPLETE, value=64.0))
    text = write_report(opts).read_text()
    assert "trials: 2 complete, 1 pruned, 1 failed (budget 4)" in text
    assert "| 1 | pruned |  | train.lr=0.01 | pruned after epoch 1 |" in text
    assert "| 2 | failed |  | train.lr=0.01 | NonFiniteLossError: loss=nan |" in text
    assert "best validation top1: **71.50** (trial 0)" in text
    best = load_config(tmp_path / "ce" / "best.yaml")  # carrot train accepts it as it is
    assert best.method == "ce" and best.train.lr == 0.01 and best.train.epochs == 2
    assert (tmp_path / "ce" / "history.png").is_file()


def test_import_carrot_does_not_import_optuna() -> None:
    code = (
        "import sys, carrot, carrot.methods, carrot.tune.space, carrot.tune.tuned\n"
        "from carrot.cli import build_parser; build_parser()\n"
        "assert 'optuna' not in sys.modules, 'optuna imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_median_pruner_never_prunes_the_first_epoch() -> None:
    from carrot.tune.worker import _pruner

    opts = TuneOptions(
        base=load_config(None, []), methods=(), spaces={}, trials=9, out=None, storage=""
    )  # type: ignore[arg-type]
    study = optuna.create_study(direction="maximize", pruner=_pruner(opts))
    for _ in range(5):  # its startup trials
        study.add_trial(
            _trial(TrialState.COMPLETE, value=90.0, intermediate_values={1: 90.0, 2: 90.0})
        )
    trial = study.ask()
    trial.report(10.0, 1)
    assert not trial.should_prune()  # epoch 1: a slow start is not a weak trial
    trial.report(10.0, 2)
    assert trial.should_prune()
