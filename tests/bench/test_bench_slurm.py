"""carrot bench accuracy --launcher slurm on the real cluster of tests/slurm_cluster.py: cells as
SLURM jobs (submitit), a signalled cell requeued and resumed, a rerun that submits nothing, a
cancelled cell resubmitted alone; and --gpus-per-cell with the local launcher (torchrun cells)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carrot.bench.grid import slot_envs
from carrot.bench.slurm import parse_time

BASE = (
    "data:\n  name: digits\n"
    "model:\n  backbone: carrot_cnn\n  timm_kwargs: {widths: [8, 16]}\n"
    "train:\n  batch_size: 16\n  k: 4\n  epochs: 2\n  max_steps_per_epoch: 10\n  device: cpu\n"
    "  checkpoint_every: 1\n  progress: false\n  plots: false\n  tensorboard: false\n"
    "  retrieval: false\n"
)


def _env(cluster) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
            "SLURM_CONF": str(cluster.conf), "CARROT_SLURM_POLL_S": "0.5"}  # fmt: skip


def _bench(base: Path, out: Path, *extra: str, grid: tuple[str, ...] = ()) -> list[str]:
    grid = grid or ("--methods", "ce", "carrot", "--seeds", "0-1")
    return [
        sys.executable, "-m", "carrot.cli", "bench", "accuracy", "--config", str(base), *grid,
        "--out", str(out), "--launcher", "slurm", "--cpus-per-cell", "1", "--slurm-time", "10",
        *extra,
    ]  # fmt: skip


def _wait_for(path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout} s")
        time.sleep(0.1)


def _comparison(out: Path) -> set[tuple[str, str, str]]:
    with open(out / "base" / "comparisons.csv") as fh:
        return {(r["method"], r["baseline"], r["n"]) for r in csv.DictReader(fh)}


@pytest.mark.slurm
def test_cells_as_slurm_jobs_requeue_rerun_and_cancel(slurm_cluster, tmp_path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(BASE)
    out = tmp_path / "out"
    env = _env(slurm_cluster)
    first = subprocess.run(
        _bench(base, out, "--no-wait"), env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "submitted 4 job(s)" in first.stdout and "rerun the same command" in first.stdout
    assert "results:" not in first.stdout  # no report yet
    ids = json.loads((out / "slurm" / "jobs.json").read_text())
    # One cell gets SLURM's time-limit signal mid-run (submitit requeues it, it resumes), another
    # is cancelled mid-run.
    signalled = out / "runs" / "base" / "carrot" / "s1"
    cancelled = out / "runs" / "base" / "ce" / "s0"
    _wait_for(signalled / "checkpoints" / "last.pt")
    slurm_cluster.run("scancel", "--signal=USR2", ids[str(signalled)])
    _wait_for(cancelled / "checkpoints" / "last.pt")
    slurm_cluster.run("scancel", ids[str(cancelled)])
    slurm_cluster.wait_empty()
    log = (signalled.parent / "s1.log").read_text()
    assert log.count(f"# SLURM job {ids[str(signalled)]}") == 2, log[-3000:]
    assert f"train --resume {signalled}" in log
    assert json.loads((signalled / "summary.json").read_text())["stopped_early"] is False
    assert not (cancelled / "summary.json").exists()

    report = subprocess.run(
        _bench(base, out, "--report-only"), env=env, capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert _comparison(out) == {("carrot", "ce", "1")}  # seed 0 of ce is missing

    # The rerun resubmits the cancelled cell only, which resumes, and waits for it.
    rerun = subprocess.run(_bench(base, out), env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "submitted 1 job(s)" in rerun.stdout
    assert "0 pending, 0 running, 4 done, 0 failed" in rerun.stderr
    after = json.loads((out / "slurm" / "jobs.json").read_text())
    assert [k for k in after if after[k] != ids[k]] == [str(cancelled)]
    assert f"train --resume {cancelled}" in (cancelled.parent / "s0.log").read_text()
    assert _comparison(out) == {("carrot", "ce", "2")}

    # A finished grid: nothing is submitted.
    again = subprocess.run(_bench(base, out), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "submitted 0 job(s)" in again.stdout
    assert json.loads((out / "slurm" / "jobs.json").read_text()) == after
    assert _comparison(out) == {("carrot", "ce", "2")}


@pytest.mark.slurm
def test_a_failing_cell_is_listed_with_its_log(slurm_cluster, tmp_path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(BASE.replace("epochs: 2", "epochs: 1"))
    out = tmp_path / "out"
    # P = 48 / 4 = 12 classes per batch, digits has 10: found when the job builds its data
    argv = _bench(base, out, "train.batch_size=48", grid=("--methods", "ce", "--seeds", "0"))
    got = subprocess.run(argv, env=_env(slurm_cluster), capture_output=True, text=True, timeout=300)
    assert got.returncode == 1, got.stderr[-3000:]
    assert "0 pending, 0 running, 0 done, 1 failed" in got.stderr
    log = out / "runs" / "base" / "ce" / "s0.log"
    assert f"1 cell(s) did not finish: {log.parent / 's0'} (job " in got.stderr
    assert f"log {log}" in got.stderr
    assert "needs P=12 classes per batch" in log.read_text()


def test_slurm_times_and_slots() -> None:
    assert [parse_time(t) for t in ("90", "4:00:00", "1-12", "1:30", "0:30:01")] == [
        90, 240, 2160, 2, 31,
    ]  # fmt: skip
    assert parse_time("UNLIMITED") is None
    with pytest.raises(ValueError, match="--slurm-time must be a SLURM time"):
        parse_time("4h")
    envs = slot_envs(jobs=None, devices=["0", "1", "2", "3"], threads=None, cores=8, per_slot=2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2,3"]
    assert envs[0]["OMP_NUM_THREADS"] == "2"
    with pytest.raises(ValueError, match="--devices must list at least --gpus-per-cell=2"):
        slot_envs(jobs=None, devices=["0"], threads=None, cores=8, per_slot=2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--no-wait"], "--no-wait and the --slurm-\\* options need --launcher slurm"),
        (["--gpus-per-cell", "0"], r"--gpus-per-cell must be an integer in \[1, 1024\], got 0"),
        (["--launcher", "slurm", "--slurm-time", "2h"], "--slurm-time must be a SLURM time"),
    ],
)
def test_bench_launcher_options_are_checked_first(tmp_path, capsys, extra, message) -> None:
    from carrot.cli import main

    base = tmp_path / "base.yaml"
    base.write_text(BASE)
    argv = ["bench", "accuracy", "--config", str(base), "--out", str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err)
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.distributed
def test_gpus_per_cell_runs_torchrun_cells_locally(tmp_path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(BASE.replace("max_steps_per_epoch: 10", "max_steps_per_epoch: 2"))
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "carrot.cli", "bench", "accuracy", "--config", str(base),
        "--methods", "carrot", "--seeds", "0", "--out", str(out), "--gpus-per-cell", "2",
        "--threads", "1",
    ]  # fmt: skip
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    got = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    for method in ("ce", "carrot"):
        run = out / "runs" / "base" / method / "s0"
        assert json.loads((run / "environment.json").read_text())["world_size"] == 2
        assert "torch.distributed.run" in (run.parent / "s0.log").read_text()


def test_job_states_come_from_squeue_live_states_only(tmp_path, monkeypatch) -> None:
    """submitit's own ``job.state`` reads ``sacct``, which clusters without accounting (and the
    test cluster) lack: there it stays UNKNOWN and ``job.done()`` never turns true. So the bench
    reads ``squeue``; a job that left the queue is finished or failed, decided by its run folder."""
    from carrot.bench.slurm import _queued

    squeue = tmp_path / "squeue"
    squeue.write_text(
        "#!/bin/sh\n"
        "printf '%s\\n' '10_0 PENDING' '10_1 RUNNING' '10_2 REQUEUED' '11 COMPLETED' '12 FAILED'\n"
    )
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    ids = ["10_0", "10_1", "10_2", "11", "12", "13"]
    assert _queued(ids) == {"10_0": "PENDING", "10_1": "RUNNING", "10_2": "REQUEUED"}
    assert _queued([]) == {}
