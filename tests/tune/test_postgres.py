"""The PostgreSQL storage on a real server, started here (initdb and pg_ctl as the postgres user
on a free port in a temporary folder; Debian's postgresql, which scripts/_postgres.sh installs)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution

from carrot.tune.storage import open_storage

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for this module's tests: its URL."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip(
            "postgresql is not installed (apt-get install postgresql; scripts/_postgres.sh)"
        )
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("starting a PostgreSQL server here needs root (runuser -u postgres)")
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("there is no postgres user")
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="carrot-pg-"))
    os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", _free_port()

    def as_postgres(*cmd: object) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, cmd)],
            check=True, capture_output=True, timeout=120, cwd=root,
        )  # fmt: skip

    try:
        as_postgres(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        as_postgres(bindir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log", "-w", "start")
        as_postgres(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "carrot")
        yield f"postgresql://postgres@127.0.0.1:{port}/carrot"
    finally:
        if (data / "postmaster.pid").exists():
            as_postgres(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_a_study_round_trips_through_postgresql(postgres: str) -> None:
    study = optuna.create_study(
        storage=open_storage(postgres), study_name="round-trip", direction="maximize"
    )
    trial = study.ask({"train.lr": FloatDistribution(1e-3, 0.2, log=True)})
    trial.set_user_attr("run_dir", "/runs/0")
    trial.report(50.0, 1)
    study.tell(trial, 61.25)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    again = optuna.load_study(study_name="round-trip", storage=open_storage(postgres))
    first, second = again.get_trials()
    assert first.value == 61.25 and first.params == trial.params
    assert first.user_attrs == {"run_dir": "/runs/0"} and first.intermediate_values == {1: 50.0}
    assert second.state == optuna.trial.TrialState.PRUNED


def test_a_tuning_on_postgresql(postgres: str, tmp_path: Path) -> None:
    from test_tune_runs import TINY, _trials, _tune

    out = tmp_path / "tune"
    done = _tune("--methods", "ce", "--trials", 2, "--out", out, "--storage", postgres, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [t.state.name for t in _trials(out, "ce", postgres)] == ["COMPLETE", "COMPLETE"]
    assert not (out / "optuna.db").exists()  # the database holds the studies
    assert postgres in (out / "tune.md").read_text()
