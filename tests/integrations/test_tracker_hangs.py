"""A tracker never holds a run at its start: a server that accepts and never replies, a closed
port, a store that cannot be written are one line (exit 2) within a bounded time, before the run
folder is claimed (issue 32, item 2). Real local sockets, no network."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from carrot.integrations.mlflow import HTTP_DEFAULTS, bound_http, check_tracking_store
from carrot.integrations.probe import http_silence
from cli_run import carrot_cli, one_line_error

pytest.importorskip("mlflow")

TINY = [
    "data.name=synthetic", "data.options.num_superclasses=2", "data.options.classes_per_superclass=2",
    "data.options.train_per_class=8", "data.options.test_per_class=4", "data.options.image_size=16",
    "data.image_size=16", "train.batch_size=8", "train.k=4", "train.epochs=1",
    "train.max_steps_per_epoch=2", "train.progress=false", "train.device=cpu",
]  # fmt: skip


@pytest.fixture
def silent_server() -> Iterator[str]:
    """http://127.0.0.1:PORT of a server that accepts every connection and never replies."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            held.append(conn)  # kept open, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    srv.close()


@pytest.fixture
def closed_port() -> str:
    """http://127.0.0.1:PORT where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def answering_server() -> Iterator[str]:
    """A server that answers every request with 404 (an answer all the same)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_probe_tells_silence_refusal_and_an_answer(
    silent_server: str, closed_port: str, answering_server: str
) -> None:
    start = time.monotonic()
    assert http_silence(silent_server, 0.5) == "no reply within 0.5 s"
    assert time.monotonic() - start < 5
    assert http_silence(closed_port, 0.5) == "connection refused"
    assert http_silence(answering_server, 2.0) is None
    assert http_silence("sqlite:///x.db", 0.5) is None  # not HTTP: nothing to probe


def test_mlflow_http_defaults_only_where_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")
    bound_http()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"  # the user's setting stays
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    )


@pytest.mark.parametrize("server", ["silent_server", "closed_port"])
def test_mlflow_store_that_does_not_answer_is_one_line_quickly(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    uri = request.getfixturevalue(server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    start = time.monotonic()
    with pytest.raises(
        ValueError, match="MLFLOW_TRACKING_URI must be a tracking server that answers"
    ):
        check_tracking_store()
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    "uri",
    ["sqlite:////sys/carrot-probe/mlflow.db", "file:///sys/carrot-probe/mlruns", "/sys/x/mlruns"],
)
def test_mlflow_store_in_a_folder_nobody_can_write_is_one_line(
    monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("no sysfs (Linux's read-only-for-everyone folder) here")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI must be a store this run can write"):
        check_tracking_store()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_mlflow_read_only_sqlite_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    db = tmp_path / "ro" / "mlflow.db"
    db.parent.mkdir()
    sqlite3.connect(db).close()
    db.chmod(0o444)
    db.parent.chmod(0o555)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        with pytest.raises(ValueError, match="must be a store this run can write"):
            check_tracking_store()
    finally:
        db.parent.chmod(0o755)


def test_a_writable_sqlite_store_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    db = tmp_path / "mlflow.db"
    sqlite3.connect(db).close()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    check_tracking_store()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    check_tracking_store()  # created by MLflow later, below a writable folder


@pytest.mark.slow
@pytest.mark.parametrize("server", ["silent_server", "closed_port"])
def test_carrot_train_with_an_mlflow_server_that_does_not_answer(
    request: pytest.FixtureRequest, tmp_path: Path, server: str
) -> None:
    """Was: > 5 min then a claimed, empty run folder (silent), 254 s of retries (refused).
    MLflow's own defaults for the rest: the run's bound is carrot's 10 s probe."""
    uri = request.getfixturevalue(server)
    env = {"MLFLOW_TRACKING_URI": uri}
    for key in HTTP_DEFAULTS:
        env[key] = os.environ.get(key, "")
    start = time.monotonic()
    done = carrot_cli(
        "train", *TINY, "train.loggers=[mlflow]", f"output_dir={tmp_path / 'run'}",
        env={k: v for k, v in env.items() if v}, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - start < 60
    one_line_error(done, "MLFLOW_TRACKING_URI must be a tracking server that answers", uri)
    assert not (tmp_path / "run").exists()  # nothing claimed


@pytest.mark.slow
def test_carrot_train_with_a_sqlite_store_nobody_can_write(tmp_path: Path) -> None:
    done = carrot_cli(
        "train", *TINY, "train.loggers=[mlflow]", f"output_dir={tmp_path / 'run'}",
        env={"MLFLOW_TRACKING_URI": "sqlite:////sys/carrot-probe/mlflow.db"}, timeout=60,
    )  # fmt: skip
    one_line_error(done, "must be a store this run can write")
    assert not (tmp_path / "run").exists()


def test_wandb_offline_when_the_server_never_replies(
    silent_server: str, closed_port: str, answering_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carrot.integrations.wandb import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # with no key it is offline whatever the server
    for url, mode in (
        (silent_server, "offline"),
        (closed_port, "offline"),
        (answering_server, "online"),
    ):
        monkeypatch.setenv("WANDB_BASE_URL", url)
        start = time.monotonic()
        assert wandb_mode(timeout=0.5) == mode
        assert time.monotonic() - start < 5


@pytest.mark.slow
def test_wandb_online_with_a_server_that_never_replies_is_bounded(
    silent_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WANDB_MODE=online asked explicitly: wandb.init gives up after its init timeout (carrot
    sets one unless WANDB_INIT_TIMEOUT is set), as one ValueError."""
    wandb = pytest.importorskip("wandb")
    from carrot.integrations.wandb import INIT_TIMEOUT_S, WandbLogger

    assert INIT_TIMEOUT_S <= 60
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    start = time.monotonic()
    try:
        with pytest.raises(ValueError, match="W&B did not start in online mode") as e:
            WandbLogger(tmp_path / "run", {"a": 1})
    finally:
        wandb.teardown()
    assert time.monotonic() - start < 60 and "\n" not in str(e.value)
