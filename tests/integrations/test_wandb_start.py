"""W&B with no WANDB_MODE and no API key does not lose the run at start: it logs offline with a
line; a W&B that refuses to start online falls back the same way; with WANDB_MODE set, a W&B
that cannot start is one line (issue 32, medium item)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("wandb")

from carrot.integrations import wandb as carrot_wandb
from carrot.integrations.wandb import WandbLogger, wandb_mode


@pytest.fixture
def server() -> Iterator[int]:
    """A real local socket that answers every request with a 404 (a reachable "W&B server":
    any HTTP reply counts, a silent one does not)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                with conn:
                    conn.settimeout(1)
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


@pytest.fixture
def no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    rc = tmp_path / "netrc"
    rc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")  # another host
    monkeypatch.setenv("NETRC", str(rc))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))


def test_no_key_means_offline_even_when_the_server_answers(
    server: int, no_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server}")
    assert wandb_mode(timeout=1) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(timeout=1) == "online"  # a key and a server: online


def test_the_logger_starts_offline_with_a_line(
    server: int, no_key: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server}")
    log = WandbLogger(tmp_path / "run", {"seed": 0})
    log.close("finished")
    out = capsys.readouterr().out
    assert "no API key; logging offline to" in out and str(tmp_path / "run" / "wandb") in out
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_a_refused_online_start_falls_back_or_is_one_line(
    no_key: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    real = carrot_wandb._import_wandb()
    modes: list[str] = []

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def init(self, **kwargs: Any) -> Any:
            modes.append(kwargs["mode"])
            if kwargs["mode"] == "online":
                raise real.errors.UsageError("api_key not configured (no-tty)")
            return real.init(**kwargs)

    monkeypatch.setattr(carrot_wandb, "_import_wandb", lambda: Refusing())
    monkeypatch.setattr(carrot_wandb, "wandb_mode", lambda: "online")  # key and server "found"
    WandbLogger(tmp_path / "a", {"seed": 0}).close("finished")
    assert modes == ["online", "offline"]
    assert "W&B did not start online (api_key not configured (no-tty))" in capsys.readouterr().out
    monkeypatch.setenv("WANDB_MODE", "online")  # the user insists: one line, no fallback
    with pytest.raises(ValueError, match=r"W&B did not start in online mode .* WANDB_MODE=offline"):
        WandbLogger(tmp_path / "b", {"seed": 0})
