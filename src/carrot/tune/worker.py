"""A tuning worker: takes trials of each method's study from the shared storage until every
study has its budget. ``--jobs N`` runs N of them (processes), ``--launcher slurm`` N jobs.

The budget: a worker starts a trial only while fewer than N counted trials are finished or
running, and a trial runs only if fewer than N counted trials were started before it (trial
numbers are handed out one at a time by the storage), so racing workers never exceed it; the
rare trial started too late is recorded, not run, and not counted (``OVER_BUDGET``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from carrot.train.schema import Config
from carrot.tune.objective import STOP_AFTER_TRIAL, TuneStopped, run_trial
from carrot.tune.space import Spec
from carrot.tune.storage import (
    OVER_BUDGET,
    counted,
    has_heartbeat,
    open_storage,
    position,
    stale_check,
    study_name,
)

__all__ = ["TuneOptions", "TuneWorker", "create_study", "run_worker"]


@dataclass(frozen=True)
class TuneOptions:
    """Everything a worker needs (picklable: workers may be processes or SLURM jobs)."""

    base: Config
    methods: tuple[str, ...]
    spaces: Mapping[str, Mapping[str, Spec]]
    trials: int
    out: Path
    storage: str
    objective: str = "top1"
    pruner: str = "median"
    seed: int = 0
    timeout_s: float | None = None
    heartbeat_s: int = 10
    jobs: int = 1


def _pruner(opts: TuneOptions) -> optuna.pruners.BasePruner:
    if opts.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=opts.base.train.epochs)
    if opts.pruner == "none":
        return optuna.pruners.NopPruner()
    # steps are epochs, from 1: epoch 1 is never pruned (a slow start is not a weak trial)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


def create_study(opts: TuneOptions, method: str, worker: int = 0) -> optuna.Study:
    """The method's study (created or loaded). Every method's sampler has the same seed; the
    workers of one method get different seeds, else their first random trials would coincide."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=opts.seed + 7919 * worker, constant_liar=True)
    return optuna.create_study(
        storage=open_storage(opts.storage, heartbeat_s=opts.heartbeat_s),
        study_name=study_name(method),
        sampler=sampler,
        pruner=_pruner(opts),
        direction="maximize",
        load_if_exists=True,
    )


def _eta(trials: list[FrozenTrial], left: int, jobs: int) -> str:
    spans = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_complete is not None and t.datetime_start is not None
        and not t.system_attrs.get(OVER_BUDGET)
    ]  # fmt: skip
    if not spans or left <= 0:
        return "0s" if left <= 0 else "?"
    s = sum(spans) / len(spans) * math.ceil(left / max(1, jobs))
    return f"{s / 3600:.1f}h" if s >= 3600 else f"{s / 60:.1f}m" if s >= 60 else f"{s:.0f}s"


def progress_line(
    study: optuna.Study, trial: FrozenTrial, method: str, budget: int, jobs: int
) -> str:
    """One line per finished trial: its value (or pruned / failed), the best, the count, the ETA."""
    if trial.state == TrialState.COMPLETE:
        what = f"{trial.value:.2f}"
    elif trial.state == TrialState.PRUNED:
        what = f"pruned at epoch {trial.user_attrs.get('pruned_at_epoch', '?')}"
    else:
        what = f"failed ({trial.user_attrs.get('fail_reason', 'see its log')})"
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value or -math.inf) if done else None
    shown = f"best {best.value:.2f} (trial {best.number})" if best is not None else "best -"
    c = counted(trials)
    finished = c["complete"] + c["pruned"] + c["fail"]
    return (
        f"tune {method} trial {trial.number}: {what} · {shown} · {finished}/{budget} · "
        f"ETA {_eta(trials, budget - finished, jobs)}"
    )


def _tune_method(opts: TuneOptions, method: str, worker: int) -> None:
    study = create_study(opts, method, worker)
    heartbeat = has_heartbeat(study)
    deadline = time.monotonic() + opts.timeout_s if opts.timeout_s else None
    space = opts.spaces[method]

    def objective(trial: optuna.Trial) -> float:
        if position(study.get_trials(deepcopy=False), trial.number) >= opts.trials:
            study._storage.set_trial_system_attr(trial._trial_id, OVER_BUDGET, True)
            raise RuntimeError("over budget: not run")
        return run_trial(trial, opts.base, method, space, opts.out, opts.objective)

    def log(study: optuna.Study, trial: FrozenTrial) -> None:
        if not trial.system_attrs.get(OVER_BUDGET):
            print(progress_line(study, trial, method, opts.trials, opts.jobs), flush=True)

    while True:
        if heartbeat:
            stale_check(study)  # a dead worker's trial: failed, retried as a waiting trial
        c = counted(study.get_trials(deepcopy=False))
        if c["complete"] + c["pruned"] + c["fail"] >= opts.trials:
            return
        if deadline is not None and time.monotonic() >= deadline:
            print(f"tune {method}: --timeout reached", flush=True)
            return
        busy = c["complete"] + c["pruned"] + c["fail"] + c["running"]
        if busy >= opts.trials and c["waiting"] == 0:
            if not heartbeat:  # nothing would ever mark a dead worker's trial: leave it
                return
            time.sleep(min(5.0, opts.heartbeat_s))  # other workers' trials finish or go stale
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[log])
        if STOP_AFTER_TRIAL:
            raise TuneStopped(f"stopped by signal {STOP_AFTER_TRIAL[0]} after a trial of {method}")


def run_worker(opts: TuneOptions, worker: int = 0) -> None:
    """Take trials of every method, in order, until each study has its budget (or --timeout)."""
    optuna.logging.set_verbosity(logging.ERROR)  # one progress line per trial instead
    for method in opts.methods:
        _tune_method(opts, method, worker)


class TuneWorker:
    """``run_worker`` as a picklable callable (a process's or a SLURM job's function)."""

    def __init__(self, opts: TuneOptions, worker: int) -> None:
        self.opts, self.worker = opts, worker

    def __call__(self) -> Any:
        run_worker(self.opts, self.worker)
        return "done"
