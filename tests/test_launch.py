"""carrot.launch: which launcher started a run, and SLURM's signals. The ``slurm`` tests run
``srun``/``sbatch`` on the real cluster of tests/slurm_cluster.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from carrot.launch import detect, master_port, requeued_run

DIGITS = [
    "data.name=digits",
    "train.progress=false",
    "train.device=cpu",
    "train.retrieval=false",
    "train.plots=false",
    "train.batch_size=16",
    "train.k=4",
]


def _env(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def test_torchrun_env_wins_over_slurm() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "SLURM_STEP_ID": "0",
           "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "4"}  # fmt: skip
    got = detect(env)
    assert (got.launcher, got.rank, got.world_size, got.local_rank) == ("torchrun", 1, 2, 1)


def test_srun_step_is_a_launcher_and_the_batch_script_is_not() -> None:
    step = {"SLURM_JOB_ID": "41", "SLURM_STEP_ID": "3", "SLURM_PROCID": "2",
            "SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "8",
            "MASTER_ADDR": "node07"}  # fmt: skip
    got = detect(step)
    assert (got.launcher, got.rank, got.world_size, got.local_rank) == ("srun", 2, 4, 0)
    assert (got.master_addr, got.master_port) == ("node07", master_port(41, 3))
    assert detect({**step, "MASTER_PORT": "1234"}).master_port == 1234
    # the batch script itself: SLURM_NTASKS=8 but one process
    batch = {"SLURM_JOB_ID": "41", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"}
    assert detect(batch).launcher == "single process" and detect(batch).world_size == 1


def test_master_port_differs_between_jobs_and_steps() -> None:
    ports = {master_port(j, s) for j in range(100, 140) for s in range(3)}
    assert len(ports) == 120 and all(20000 <= p < 60000 for p in ports)


def test_requeued_run_finds_the_folder_this_job_claimed(tmp_path, monkeypatch) -> None:
    wanted = tmp_path / "s0"
    for name, job in (("s0", "7"), ("s0-2", "8"), ("s0-3", "9")):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / ".carrot-run").write_text(f"123\nslurm_job={job}\n")
        (tmp_path / name / "checkpoints" / "last.pt").write_bytes(b"x")
    monkeypatch.setenv("SLURM_JOB_ID", "8")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeued_run(wanted) is None  # a first start never resumes
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_run(wanted) == tmp_path / "s0-2"
    monkeypatch.setenv("SLURM_JOB_ID", "80")
    assert requeued_run(wanted) is None


def _final_train_loss(run: Path) -> float:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return float(records[-1]["train_loss"])


@pytest.mark.slurm
def test_srun_two_tasks_match_torchrun(slurm_cluster, tmp_path) -> None:
    cfg = [*DIGITS, "train.epochs=2", "train.max_steps_per_epoch=4", "seed=3"]
    srun = [
        "srun", "-n", "2", "--kill-on-bad-exit=1", sys.executable, "-m", "carrot.cli", "train",
        *cfg, f"output_dir={tmp_path / 'srun'}",
    ]  # fmt: skip
    # the reference: torchrun inside a SLURM job step (SLURM's variables set too: torchrun's win)
    torchrun = [
        "srun", "-n", "1", "-c", "2", sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "carrot.cli", "train", *cfg, f"output_dir={tmp_path / 'torchrun'}",
    ]  # fmt: skip
    env = {**_env(), "SLURM_CONF": str(slurm_cluster.conf)}
    got = subprocess.run(srun, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert got.returncode == 0, got.stderr[-3000:]
    assert "2 process(es) on cpu (launcher: srun (job " in got.stdout
    assert got.stdout.count("final (epoch 2)") == 1  # rank 0 reports, once
    assert not (tmp_path / "srun-2").exists()  # one run, not two independent copies
    assert json.loads((tmp_path / "srun" / "environment.json").read_text())["world_size"] == 2
    ref = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "(launcher: torchrun)" in ref.stdout
    assert abs(_final_train_loss(tmp_path / "srun") - _final_train_loss(tmp_path / "torchrun")) < 1e-5


@pytest.mark.slurm
def test_scontrol_expands_the_node_list(slurm_cluster) -> None:
    from carrot.launch import _first_host

    os.environ["SLURM_CONF"] = str(slurm_cluster.conf)
    try:
        assert _first_host(slurm_cluster.node) == slurm_cluster.node
    finally:
        del os.environ["SLURM_CONF"]


def _wait_for(path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout} s")
        time.sleep(0.2)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slurm
def test_usr1_checkpoints_requeues_and_resumes_exactly(slurm_cluster, tmp_path) -> None:
    cfg = [*DIGITS, "train.epochs=2", "train.max_steps_per_epoch=12", "train.checkpoint_every=1"]
    run = tmp_path / "run"
    script = tmp_path / "job.sh"
    train = " ".join([sys.executable, "-m", "carrot.cli", "train", *cfg, f"output_dir={run}"])
    script.write_text(f"#!/bin/bash\nsrun -n 1 {train}\n")
    out = tmp_path / "job.log"
    env = {**_env(), "SLURM_CONF": str(slurm_cluster.conf)}
    sub = subprocess.run(
        ["sbatch", "--parsable", "--requeue", "-n", "1", "--open-mode=append", "-o", str(out),
         str(script)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    job = sub.stdout.strip().split(";")[0]
    _wait_for(run / "checkpoints" / "last.pt")  # the first step is done: mid-epoch 1
    slurm_cluster.run("scancel", "--signal=USR1", job)
    slurm_cluster.wait_empty()
    log = out.read_text()
    assert "stopped at epoch 1, step" in log, log[-3000:]
    assert f"SLURM job {job} requeued" in log, log[-3000:]
    assert "requeued SLURM job: resuming" in log, log[-3000:]
    stopped_at = int(log.split("stopped at epoch 1, step ")[1].split(";")[0])
    assert 1 <= stopped_at < 12
    assert f"resuming at epoch 1, step {stopped_at} · run folder {run}" in log
    summary = json.loads((run / "summary.json").read_text())
    assert not summary["stopped_early"]
    ref = tmp_path / "ref"
    plain = subprocess.run(
        [sys.executable, "-m", "carrot.cli", "train", *cfg, f"output_dir={ref}"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr[-3000:]
    got, want = _weights(run), _weights(ref)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.slow
def test_usr1_outside_slurm_is_an_interrupt(tmp_path) -> None:
    cfg = [*DIGITS, "train.epochs=1", "train.max_steps_per_epoch=40", "train.checkpoint_every=1"]
    env = {k: v for k, v in _env().items() if not k.startswith("SLURM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "carrot.cli", "train", *cfg, f"output_dir={tmp_path / 'run'}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(tmp_path / "run" / "checkpoints" / "last.pt", timeout=120)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Continue with: carrot train --resume" in err
