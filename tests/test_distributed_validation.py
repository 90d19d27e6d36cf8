"""The validation split under DDP: sharded like test, its metrics exact over ranks (real gloo
processes against one process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dist_val_workers import split_metrics, val_worker

from dist_workers import free_port


@pytest.mark.distributed
def test_two_ranks_give_the_validation_metrics_of_one_process(tmp_path: Path) -> None:
    mp.start_processes(
        val_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    single = split_metrics()
    for key in ("val_top1", "val_mean_class_acc", "val_precision_at_1", "val_map_at_r"):
        assert key in single and f"{key.removeprefix('val_')}" in single
        assert f"{key}_ema" in single
    # The two models differ, and validation differs from test: the comparison can fail.
    assert single["val_map_at_r"] != single["val_map_at_r_ema"]
    assert single["val_map_at_r"] != single["map_at_r"]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got.keys() == single.keys()
        for key, value in single.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
