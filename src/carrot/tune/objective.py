"""One trial: a real training run at the sampled settings, scored on the validation split.

The run is the trainer ``carrot train`` runs, in this process, into
``DIR/<method>/trials/<number>/`` (its output in ``<number>.log`` beside it). The validation
score of every evaluated epoch is reported to the pruner, which may stop the run after that
epoch's checkpoint; the trial's value is the score of the last evaluated epoch. A run that
fails (a non-finite loss, a setting the config refuses, any error) is a FAIL trial whose
``fail_reason`` says why, never a score.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from carrot.train.schema import Config, ConfigError
from carrot.tune.space import Choice, Float, Int, Spec, nest

__all__ = [
    "OBJECTIVE_KEYS",
    "TuneStopped",
    "full_training",
    "require_validation",
    "run_trial",
    "suggest",
    "trial_config",
    "validation_split",
]

OBJECTIVE_KEYS = {"top1": "val_top1", "mean_class_acc": "val_mean_class_acc"}
"""``--objective`` → the key of an epoch's record holding that validation score (written by the
trainer when ``data.val_split`` is not none)."""


class TuneStopped(BaseException):
    """The trial's run was stopped (Ctrl-C, SIGTERM, preemption) at a checkpoint. Not an
    ``Exception``, so Optuna leaves the trial RUNNING: its heartbeat stops, and the next worker
    marks it stale and retries it, so it never counts as a failure of its settings."""


STOP_AFTER_TRIAL: list[int] = []
"""Signals the trainer received while finishing a trial (it completes): the worker stops next."""


def validation_split(cfg: Config) -> str:
    """The config's ``data.val_split`` (``"none"`` for a trainer without one)."""
    return str(getattr(cfg.data, "val_split", "none"))


def require_validation(cfg: Config) -> None:
    if validation_split(cfg) == "none":
        raise ConfigError(
            "carrot tune scores trials on a validation split, never the test set: set "
            "data.val_split=fraction (or official) in the config or as an override, got "
            "data.val_split=none."
        )


def full_training(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config (``config_to_dict``) made to train on the whole training set: the tuned
    configuration's final runs do not hold out the validation part."""
    out = copy.deepcopy(data)
    if "val_split" in out.get("data", {}):
        out["data"]["val_split"] = "none"
    return out


def suggest(trial: optuna.Trial, space: Mapping[str, Spec]) -> dict[str, Any]:
    """The trial's value of every key of ``space``."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, Float):
            values[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, Int):
            values[key] = trial.suggest_int(key, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, Choice):
            values[key] = trial.suggest_categorical(key, list(spec.choices))
    return values


def trial_config(
    base: Config, method: str, values: Mapping[str, Any], run_dir: Path | None = None
) -> Config:
    """``base`` with ``method`` and the trial's settings (validated), into ``run_dir``."""
    from carrot.train.config import config_from_dict

    data: dict[str, Any] = {"method": method, **values}
    if run_dir is not None:
        data["output_dir"] = str(run_dir).replace("{", "{{").replace("}", "}}")
        data["train.progress"] = False
    return config_from_dict(nest(data), base=copy.deepcopy(base))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def run_trial(
    trial: optuna.Trial, base: Config, method: str, space: Mapping[str, Spec], out: Path,
    objective: str,
) -> float:  # fmt: skip
    """Train one trial's configuration; returns its validation score (see the module's doc)."""
    from carrot.train import Trainer
    from carrot.train.errors import TrainInterrupted

    key = OBJECTIVE_KEYS[objective]
    values = suggest(trial, space)
    folder = out / method / "trials"
    run_dir = folder / str(trial.number)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    folder.mkdir(parents=True, exist_ok=True)
    last: dict[str, float] = {}

    def report(record: dict[str, Any]) -> None:
        if key not in record:
            return  # an epoch without evaluation
        value = float(record[key])
        if not math.isfinite(value):
            raise FloatingPointError(f"{key} is {value} at epoch {record['epoch']}.")
        last["value"] = value
        trial.report(value, int(record["epoch"]))
        # The last epoch's score is the trial's value: a run that trained to the end is complete
        # (pruning it then saves nothing and would hide a finished score).
        if int(record["epoch"]) < base.train.epochs and trial.should_prune():
            trial.set_user_attr("pruned_at_epoch", int(record["epoch"]))
            raise optuna.TrialPruned(f"pruned after epoch {record['epoch']} ({key} {value:.2f})")

    try:
        with (
            open(folder / f"{trial.number}.log", "w") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            cfg = trial_config(base, method, values, run_dir)
            trainer = Trainer(cfg, on_epoch_end=report)
            trainer.fit()
        signum = getattr(getattr(trainer, "_stop", None), "signum", None)
        if signum is not None:  # a stop asked for too late for the trainer (its last evaluation)
            STOP_AFTER_TRIAL.append(signum)
        if "value" not in last:
            raise RuntimeError(f"the run reported no {key} (no evaluated epoch).")
    except optuna.TrialPruned:
        raise
    except TrainInterrupted as e:
        raise TuneStopped(f"trial {trial.number} of {method} stopped at a checkpoint") from e
    except Exception as e:
        trial.set_user_attr("fail_reason", f"{type(e).__name__}: {_one_line(e)}")
        raise
    return last["value"]
