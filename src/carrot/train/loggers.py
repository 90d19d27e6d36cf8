"""Where a run's metrics go besides ``metrics.jsonl``: ``train.loggers``, any of ``tensorboard``,
``csv``, ``mlflow`` and ``wandb``.

The trainer calls :class:`Trackers` on rank 0 only: :meth:`~Trackers.log_step` at every logging
interval (``train_step/<key>`` at the global optimizer step), :meth:`~Trackers.log_epoch` after each
epoch (``epoch/<key>`` at the epoch number), :meth:`~Trackers.log_artifacts` when the run's plots
and summary exist, and :meth:`~Trackers.close` last. MLflow and W&B runs are remembered in the
run folder's ``trackers.json``, so that ``carrot train --resume`` continues the same tracker run.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from carrot.train.config import Config, config_to_dict, flatten

__all__ = [
    "LOGGERS",
    "CsvLogger",
    "TensorBoardLogger",
    "Tracker",
    "Trackers",
    "check_trackers",
    "open_trackers",
]

LOGGERS = ("tensorboard", "csv", "mlflow", "wandb")
TRACKERS_FILE = "trackers.json"
"""Run folder file with the MLflow / W&B run ids, read back on resume."""


class Tracker(Protocol):
    """One destination of a run's metrics."""

    def log_metrics(self, metrics: dict[str, float], *, step: int, kind: str) -> None:
        """``kind`` is ``"train_step"`` (``step``: global optimizer step) or ``"epoch"``
        (``step``: the epoch number, from 1)."""

    def log_artifacts(self, run_dir: Path) -> None: ...

    def close(self, status: str) -> None:
        """``status``: ``"finished"``, ``"killed"`` (interrupted) or ``"failed"``."""


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: v
        for k, v in record.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class TensorBoardLogger:
    """TensorBoard events in ``run_dir/tensorboard`` (when tensorboard is installed)."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log_metrics(self, metrics: dict[str, float], *, step: int, kind: str) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(f"{kind}/{k}", v, step)
        if kind == "epoch":
            self.writer.flush()

    def log_artifacts(self, run_dir: Path) -> None:
        pass

    def close(self, status: str) -> None:
        self.writer.close()


class CsvLogger:
    """``metrics.csv``: one row per epoch (the columns of every epoch so far), rewritten whole
    each epoch; ``metrics_steps.csv``: long format ``step,name,value`` of the logged steps. A
    resumed run drops the step rows after its checkpoint, which it trains again."""

    def __init__(self, run_dir: Path, history: Sequence[dict[str, Any]], step: int) -> None:
        self.epochs_file = run_dir / "metrics.csv"
        self.steps_file = run_dir / "metrics_steps.csv"
        self.rows = [_numbers(r) | {"epoch": r["epoch"]} for r in history if "epoch" in r]
        kept: list[list[str]] = []
        if self.steps_file.is_file():
            with open(self.steps_file, newline="") as fh:
                kept = [row for row in list(csv.reader(fh))[1:] if int(row[0]) <= step]
        with open(self.steps_file, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "name", "value"])
            writer.writerows(kept)
        self._write_epochs()

    def _write_epochs(self) -> None:
        columns: list[str] = ["epoch"]
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        with open(self.epochs_file, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def log_metrics(self, metrics: dict[str, float], *, step: int, kind: str) -> None:
        if kind == "epoch":
            self.rows = [r for r in self.rows if r["epoch"] != step]  # re-evaluated on resume
            self.rows.append({"epoch": step, **metrics})
            self._write_epochs()
            return
        with open(self.steps_file, "a", newline="") as fh:
            csv.writer(fh).writerows([step, k, repr(v)] for k, v in metrics.items())

    def log_artifacts(self, run_dir: Path) -> None:
        pass

    def close(self, status: str) -> None:
        pass


class Trackers:
    """A run's trackers behind one call each (an empty set on ranks other than 0)."""

    def __init__(self, trackers: dict[str, Tracker]) -> None:
        self.trackers = trackers

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers.values():
            t.log_metrics(metrics, step=step, kind="train_step")

    def log_epoch(self, record: dict[str, Any]) -> None:
        """The epoch's record (its numbers; ``epoch`` itself is the step)."""
        metrics = _numbers({k: v for k, v in record.items() if k != "epoch"})
        for t in self.trackers.values():
            t.log_metrics(metrics, step=int(record["epoch"]), kind="epoch")

    def log_artifacts(self, run_dir: Path) -> None:
        for t in self.trackers.values():
            t.log_artifacts(run_dir)

    def close(self) -> None:
        """Called from a ``finally``: the exception in flight, if any, sets the run's status."""
        error = sys.exc_info()[0]
        status = "finished"
        if error is not None:
            status = "killed" if issubclass(error, KeyboardInterrupt) else "failed"
            if error.__name__ == "TrainInterrupted":
                status = "killed"
        for t in self.trackers.values():
            t.close(status)
        self.trackers = {}


def check_trackers(cfg: Config) -> None:
    """Before the run folder is claimed (rank 0): each remote tracker of ``cfg.train.loggers``
    is installed and answers within a bounded time, so a start never waits indefinitely on one
    and a failed start leaves no claimed folder. MLflow: its store (see
    :func:`carrot.integrations.mlflow.check_tracking_store`); W&B decides online or offline
    with a bounded probe when it starts (:func:`carrot.integrations.wandb.wandb_mode`)."""
    if "mlflow" in cfg.train.loggers:
        from carrot.integrations.mlflow import check_tracking_store

        check_tracking_store()


def open_trackers(
    cfg: Config,
    run_dir: Path,
    *,
    resumed: bool,
    history: Sequence[dict[str, Any]] = (),
    step: int = 0,
) -> Trackers:
    """The trackers of ``cfg.train.loggers`` for the run in ``run_dir`` (rank 0 only).

    ``train.tensorboard=false`` drops TensorBoard from the list (older configs and suites use it);
    TensorBoard is skipped silently when it is not installed, as before. MLflow and W&B need their
    extras (``pip install 'carrot-fgvc[mlflow]'`` / ``[wandb]``). A resumed run (``resumed``)
    continues the MLflow / W&B runs named in ``run_dir/trackers.json``.
    """
    names = list(dict.fromkeys(cfg.train.loggers))
    if not cfg.train.tensorboard and "tensorboard" in names:
        names.remove("tensorboard")
    ids_file = run_dir / TRACKERS_FILE
    ids: dict[str, str] = {}
    if resumed and ids_file.is_file():
        ids = json.loads(ids_file.read_text())
    params = flatten(config_to_dict(cfg))
    trackers: dict[str, Tracker] = {}
    try:
        for name in names:
            if name == "tensorboard":
                try:
                    trackers[name] = TensorBoardLogger(run_dir)
                except ImportError:
                    continue
            elif name == "csv":
                trackers[name] = CsvLogger(run_dir, history, step)
            elif name == "mlflow":
                from carrot.integrations.mlflow import MlflowLogger

                trackers[name] = MlflowLogger(run_dir, params, run_id=ids.get("mlflow"))
                ids["mlflow"] = trackers[name].run_id  # type: ignore[attr-defined]
            elif name == "wandb":
                from carrot.integrations.wandb import WandbLogger

                trackers[name] = WandbLogger(run_dir, params, run_id=ids.get("wandb"))
                ids["wandb"] = trackers[name].run_id  # type: ignore[attr-defined]
            else:  # the config's Literal type refuses other names first
                raise ValueError(f"train.loggers must hold {', '.join(LOGGERS)}, got {name!r}.")
    except BaseException:
        Trackers(trackers).close()
        raise
    if ids:
        from carrot.train.runtime import atomic_write_text

        atomic_write_text(ids_file, json.dumps(ids, indent=2) + "\n")
    return Trackers(trackers)
