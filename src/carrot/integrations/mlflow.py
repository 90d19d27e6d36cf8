"""MLflow tracking for ``carrot train``: ``train.loggers=[mlflow]``.

MLflow is an optional extra: ``pip install 'carrot-fgvc[mlflow]'``. The tracking server or store
comes from MLflow's own settings (``MLFLOW_TRACKING_URI``: ``http://...``, ``sqlite:///...``, or a
folder, ``file://...``, for which carrot sets ``MLFLOW_ALLOW_FILE_STORE=true`` unless it is set:
MLflow 3 keeps that store in maintenance mode and refuses it otherwise), the experiment from
``MLFLOW_EXPERIMENT_NAME`` (default ``carrot``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlparse

from carrot.integrations.artifacts import artifact_files

__all__ = ["HTTP_DEFAULTS", "MlflowLogger", "bound_http", "check_tracking_store"]

_PROJECT = __name__.partition(".")[0]  # the package's name, carrot

_EXTRA = "pip install 'carrot-fgvc[mlflow]'"
# MLflow's limits: 100 params a batch, 6000 characters a value (500 in older servers).
_PARAMS_PER_BATCH = 100
_PARAM_CHARS = 500
_METRICS_PER_BATCH = 1000
_STATUS = {"finished": "FINISHED", "killed": "KILLED", "failed": "FAILED"}


def _import_mlflow() -> ModuleType:
    try:
        import mlflow
    except ImportError as err:
        raise ImportError(
            f"train.loggers=[mlflow] needs MLflow, which is not installed; install it with: {_EXTRA}"
        ) from err
    return mlflow


HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
"""MLflow's HTTP settings unless the user set them: MLflow's own (120 s, 7 retries, back-off 2)
hold a run for minutes on a server that never answers; these bound every call to ~40 s."""


def bound_http() -> None:
    """Sets :data:`HTTP_DEFAULTS` in the environment, each only if the user did not set it."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///FILE`` URI (relative) or ``sqlite:////ABS``."""
    rest = uri.removeprefix("sqlite://").split("?", 1)[0]
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(rest[1:])


def _unwritable(path: Path) -> str | None:
    """Why the run could not write the store ``path`` (a SQLite file or a folder), or None.
    Tried, not read from the permission bits: root ignores those, a read-only mount does not."""
    import sqlite3
    import tempfile

    if path.is_file():  # a SQLite database: take its write lock (journal beside it) and let go
        try:
            con = sqlite3.connect(f"file:{quote(str(path))}?mode=rw", uri=True, timeout=10)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
            finally:
                con.close()
        except sqlite3.Error as e:
            return f"{path}: {e}"
        return None
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # MLflow creates the missing folders below the first existing one
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f"{folder}: {e.strerror or e}"
    return None


def check_tracking_store() -> None:
    """Before the run folder is claimed: the tracking store answers and can be written, in a
    bounded time (:func:`bound_http`; an HTTP server gets one request with that timeout; a
    SQLite or folder store must be writable). A one-line ``ValueError`` otherwise."""
    from carrot.integrations.probe import http_silence

    mlflow = _import_mlflow()
    bound_http()
    uri = mlflow.get_tracking_uri()
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        timeout = float(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"])
        why = http_silence(uri, timeout, path="/health")
        if why is not None:
            raise ValueError(
                f"MLFLOW_TRACKING_URI must be a tracking server that answers, got {uri!r} "
                f"({why}); start the server, or unset it to log to ./mlruns (see "
                "docs/training.md, Trackers)."
            )
        return
    store = None
    if scheme == "sqlite":
        store = _sqlite_path(uri)
    elif scheme in ("", "file"):
        store = Path(urlparse(uri).path if scheme == "file" else uri)
    why = None if store is None else _unwritable(store)
    if why is not None:
        raise ValueError(
            f"MLFLOW_TRACKING_URI must be a store this run can write, got {uri!r} ({why}); set "
            "it to a writable one (see docs/training.md, Trackers)."
        )


def _param_value(v: Any) -> str:
    text = str(v)
    return text if len(text) <= _PARAM_CHARS else text[: _PARAM_CHARS - 3] + "..."


class MlflowLogger:
    """One MLflow run per carrot run: params (the resolved config, flattened to ``section.key``),
    ``train_step/*`` metrics at the global step, ``epoch/*`` metrics at the epoch, and the run
    folder's config, summary, metrics and plots as artifacts. ``run_id``: an MLflow run to
    continue (a resumed carrot run); its params are kept and only new keys are added."""

    def __init__(self, run_dir: Path, params: dict[str, Any], *, run_id: str | None = None) -> None:
        mlflow = _import_mlflow()
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        bound_http()  # every call of this run is bounded, not only the start
        uri = mlflow.get_tracking_uri()
        if urlparse(uri).scheme in ("", "file") and "MLFLOW_ALLOW_FILE_STORE" not in os.environ:
            # MLflow 3 refuses its folder store unless asked; a file:// URI is that request
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
            print(f"carrot train: MLflow folder store {uri} (MLflow 3 prefers sqlite:///mlflow.db)")
        try:
            self.client = MlflowClient()
            if run_id is not None:
                run = self.client.get_run(run_id)
                self.client.update_run(run_id, status="RUNNING")
                have = set(run.data.params)
            else:
                name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or _PROJECT
                exp = self.client.get_experiment_by_name(name)
                exp_id = (
                    exp.experiment_id if exp is not None else self.client.create_experiment(name)
                )
                run = self.client.create_run(
                    exp_id, run_name=run_dir.name, tags={"carrot.run_dir": str(run_dir.resolve())}
                )
                have = set()
        except Exception as e:  # MlflowException, or the store's own (SQLAlchemy, OSError)
            if (
                not isinstance(e, (MlflowException, OSError))
                and "sqlalchemy" not in type(e).__module__
            ):
                raise
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(
                f"MLflow could not open a run at {mlflow.get_tracking_uri()} ({first[:300]}); "
                "set MLFLOW_TRACKING_URI (see docs/training.md, Trackers)."
            ) from e
        self.run_id: str = run.info.run_id
        items = [Param(k, _param_value(v)) for k, v in params.items() if k not in have]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], *, step: int, kind: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(f"{kind}/{k}", v, now, step) for k, v in metrics.items()]
        for i in range(0, len(items), _METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _METRICS_PER_BATCH])

    def log_artifacts(self, run_dir: Path) -> None:
        for f in artifact_files(run_dir):
            sub = str(f.parent.relative_to(run_dir)) if f.parent != run_dir else None
            self.client.log_artifact(self.run_id, str(f), sub)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=_STATUS[status])
