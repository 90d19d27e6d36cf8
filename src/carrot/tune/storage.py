"""Where the studies live, and how a trial budget is counted so that it is never exceeded.

Storage: a SQLite file in the output folder by default (``DIR/optuna.db``), any Optuna storage
URL (PostgreSQL for clusters), or Optuna's journal file (``journal:PATH`` or a ``.log`` file)
for a shared filesystem without a database. Database storages get Optuna's heartbeat: a trial
whose worker died (``kill -9``, a lost node) is marked FAIL once its heartbeat is older than the
grace period and retried with the same settings as a new trial; the stale one is then not
counted, so no trial counts twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "OVER_BUDGET",
    "counted",
    "open_storage",
    "position",
    "storage_url",
    "study_name",
]

OVER_BUDGET = "carrot_over_budget"
"""System attribute of a trial a worker started after the budget was taken by others; it was
not run (recorded FAIL) and is not counted."""

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def storage_url(storage: str | None, out: Path) -> str:
    """The storage's URL: ``storage`` as given, default ``sqlite:///OUT/optuna.db``."""
    if storage is None:
        return f"sqlite:///{(out / 'optuna.db').resolve()}"
    return storage


def open_storage(url: str, *, heartbeat_s: int = 10) -> optuna.storages.BaseStorage:
    """The Optuna storage of ``url``; database storages with a heartbeat every ``heartbeat_s``
    seconds and a grace period of three of them."""
    if url.startswith("journal:") or url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:")).expanduser()
        if not path.parent.is_dir():
            raise ValueError(f"--storage {url}: folder {path.parent} does not exist.")
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ValueError(
            f"--storage must be a database URL (sqlite:///FILE, postgresql://USER@HOST/DB), "
            f"journal:FILE or a .log file, got {url!r}."
        )
    url = _postgres_driver(url)
    with warnings.catch_warnings():  # heartbeat_interval is "experimental" since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            heartbeat_interval=heartbeat_s,
            grace_period=3 * heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            # SQLite: wait for another worker's write instead of failing at once
            engine_kwargs={"connect_args": {"timeout": 60}}
            if url.startswith("sqlite")
            else {"pool_pre_ping": True},
        )


def _postgres_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg
    (3), the tune extra installs psycopg2-binary (wheels everywhere)."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def study_name(method: str) -> str:
    return f"carrot-tune-{method}"


def _retried(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the stale trials that were retried (their retry counts instead)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _countable(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    retried = _retried(trials)
    return [
        t
        for t in trials
        if not t.system_attrs.get(OVER_BUDGET)
        and not (t.state == TrialState.FAIL and t.number in retried)
    ]


def counted(trials: list[FrozenTrial]) -> dict[str, int]:
    """Finished trials by state (complete, pruned, fail) and the unfinished ones (running,
    waiting), leaving out the retried stale ones and those never run for lack of budget."""
    out = {"complete": 0, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    for t in _countable(trials):
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def spent(trials: list[FrozenTrial]) -> int:
    c = counted(trials)
    return c["complete"] + c["pruned"] + c["fail"]


def position(trials: list[FrozenTrial], number: int) -> int:
    """How many counted trials came before trial ``number`` (started or finished): it is
    within a budget of N trials when this is < N. Trial numbers are handed out by the storage,
    one at a time, so two workers never get the same position."""
    return sum(1 for t in _countable(trials) if t.number < number)


def stale_check(study: optuna.Study) -> None:
    """Fail (and retry) the trials whose heartbeat stopped, as Optuna does before a trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def has_heartbeat(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    storage: Any = study._storage
    return bool(is_heartbeat_enabled(getattr(storage, "_backend", storage)))
