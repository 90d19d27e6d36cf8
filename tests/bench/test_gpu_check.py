"""benchmarks/gpu_check.py, the developer's GPU check outside the installed package, still runs
(its CPU dry run of the correctness part, as a fresh process the way it is launched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_dry_run_runs_from_its_folder(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--only", "correctness",
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    errors = {k: v for k, v in result["correctness"].items() if k.endswith("_err")}
    # float32 against float64: 1e-3, but 1e-2 for the gradient through the statistics
    # (detach_stats=False), where float32 keeps about three digits (0.0006-0.003 over draws).
    limits = {k: 1e-2 if k.startswith("grad_") else 1e-3 for k in errors}
    assert errors and all(v < limits[k] for k, v in errors.items()), errors


def test_developer_tools_are_not_in_the_package() -> None:
    import carrot.bench

    package = Path(carrot.bench.__file__).parent
    assert not (package / "gpu.py").exists() and not (package / "study.py").exists()
    assert (REPO / "benchmarks" / "gpu.py").is_file() and (REPO / "benchmarks" / "study.py").is_file()
