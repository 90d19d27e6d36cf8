"""--launcher slurm without --slurm-time on a cluster whose controller fails or does not answer:
one line saying to give --slurm-time, within a bounded wait (issue 32, medium item)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

import carrot.bench.slurm as slurm


def _fake_sinfo(folder: Path, body: str) -> None:
    folder.mkdir()
    exe = folder / "sinfo"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('echo "slurm_load_partitions: Unable to contact slurm controller" >&2; exit 1',
         "Unable to contact slurm controller"),
        ("exec sleep 30", "timed out after 1"),
    ],
)  # fmt: skip
def test_a_failing_or_silent_sinfo_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    _fake_sinfo(tmp_path / "bin", body)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(slurm, "SINFO_TIMEOUT", 1.0)
    start = time.monotonic()
    with pytest.raises(
        ValueError, match=rf"without --slurm-time .*sinfo failed \(.*{message}.*give --slurm-time"
    ):
        slurm._partition_limit("gpu")
    assert time.monotonic() - start < 10


def test_no_sinfo_at_all_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(ValueError, match=r"sinfo failed \(.*No such file"):
        slurm._partition_limit(None)


def test_a_working_sinfo_gives_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_sinfo(tmp_path / "bin", 'printf "debug* 1:00:00\\ngpu 4:00:00\\n"')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert slurm._partition_limit("gpu") == "4:00:00"
    assert slurm._partition_limit(None) == "1:00:00"
