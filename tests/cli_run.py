"""Run the ``carrot`` command as a user does: a real subprocess on real files, with this
checkout's sources first on the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def carrot_cli(
    *args: object, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m carrot.cli ARGS`` with stdout and stderr captured as text."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full.pop("CARROT_DEBUG", None)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), full.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "carrot.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2 with one line on stderr, no traceback, holding every needle."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
