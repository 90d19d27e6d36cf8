"""examples/lightning_carrot.py: CARROT under PyTorch Lightning, on one process and two (gloo)."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.testing import assert_close

from carrot import OperatorOptions, PKSampler, carrot_operator, summarize_stats
from carrot.functional import safe_normalize

from dist_workers import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "lightning_carrot.py"
# 8 classes of 4 images, P = 2 classes of K = 4 per rank: one group per class, so an epoch has
# 8 / (2 · 2) = 2 steps with two ranks and step 2 is the first of epoch 1.
TINY = ["--classes", "8", "--per-class", "4", "--batch-size", "8", "--k", "4"]
TINY += ["--image-size", "16", "--no-progress-bar", "--log-every-n-steps", "1"]
STAT_KEYS = ("classes", "gamma", "r", "m", "counts")


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lightning_carrot", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_fast_dev_run_on_cpu(tmp_path: Path) -> None:
    _run(["--fast-dev-run", *TINY, "--dump-stats", str(tmp_path / "dump")], tmp_path)
    (dump,) = (tmp_path / "dump").iterdir()  # one training step
    record = torch.load(dump, weights_only=True)
    assert record["classes"].numel() == 2 and record["z"].shape == (8, 128)


@pytest.mark.distributed
def test_two_ranks_see_the_statistics_of_the_concatenated_batch(tmp_path: Path) -> None:
    dump, logs = tmp_path / "dump", tmp_path / "logs"
    _run(
        [
            "--devices",
            "2",
            "--max-steps",
            "3",
            *TINY,
            "--dump-stats",
            str(dump),
            "--log-dir",
            str(logs),
        ],
        tmp_path,
    )
    steps = [[torch.load(dump / f"rank{r}_step{s}.pt") for r in range(2)] for s in range(3)]
    _, labels, _ = _example().synthetic(classes=8, per_class=4, image_size=16)
    labels_t = torch.tensor(labels)
    logged = {
        int(row["step"]): row
        for row in csv.DictReader((logs / "carrot" / "version_0" / "metrics.csv").open())
        if row["carrot/gamma_mean"]
    }
    for step, ranks in enumerate(steps):
        # One process on the concatenated batch, local statistics.
        z = torch.cat([rec["z"] for rec in ranks])
        y = torch.cat([rec["y"] for rec in ranks])
        options = OperatorOptions(**{**ranks[0]["options"], "global_stats": False})
        _, want = carrot_operator(safe_normalize(z), y, options=options)
        assert want["classes"].numel() == 4
        for rank, rec in enumerate(ranks):
            assert rec["y"].unique().numel() == 2, "each rank holds 2 of the step's 4 classes"
            for key in STAT_KEYS:
                assert_close(rec[key], want[key], msg=f"step {step}, rank {rank}: {key}")
            # The rank-aware sampler, with set_epoch called every epoch.
            assert rec["epoch"] == rec["sampler_epoch"] == step // 2
            sampler = PKSampler(labels, batch_size=8, k=4, seed=0, num_replicas=2, rank=rank)
            batches = sampler.epoch_batches(rec["epoch"])[:, 2 * rank : 2 * rank + 2]
            assert torch.equal(rec["y"], labels_t[batches[step % 2].reshape(-1)])
        # γ summaries reach Lightning's logger (rank 0 writes them).
        summary = summarize_stats(want, sync=True)
        for key in ("gamma_mean", "gamma_max", "r_mean", "m_mean", "classes_in_batch"):
            assert float(logged[step][f"carrot/{key}"]) == pytest.approx(summary[key], rel=1e-5)
    # Without set_epoch, epoch 1 would repeat epoch 0's first batch.
    assert not torch.equal(steps[2][0]["y"], steps[0][0]["y"])
