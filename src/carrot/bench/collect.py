"""A finished cell's row of results.csv and its per-epoch trajectory, read from its run folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from carrot.bench.grid import Cell
from carrot.bench.runfiles import read_records, read_summary
from carrot.bench.selection import validation_columns
from carrot.train.report import GEOMETRY_KEYS

__all__ = ["GEOMETRY", "collect"]

GEOMETRY = tuple(k for k in GEOMETRY_KEYS if k != "gamma_max")
"""Per-epoch CARROT statistics of the training batches (every method records them)."""


def collect(cell: Cell, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One results row and the per-epoch trajectory of a finished cell. ``first_*`` and
    ``final_*`` geometry: the means over the first and the last epoch's training batches.

    ``final_top1`` is the final epoch's test top-1; ``best_top1`` the highest test top-1 over the
    epochs (chosen on test: optimistic). Runs with a validation split (``data.val_split``) also
    give ``final_val_top1``, ``val_best_epoch`` (highest validation top-1) and
    ``val_selected_top1``, the test top-1 of that epoch (NaN without a split). A run file that is
    not valid JSON, holds NaN or infinity, or an accuracy outside [0, 100] is a one-line
    ``ValueError`` naming it (:mod:`carrot.bench.runfiles`)."""
    run = cell.run_dir(out)
    summary = read_summary(run, keys=("epochs",))
    records = read_records(run)
    evaluated = [r for r in records if "top1" in r]
    best = max(evaluated, key=lambda r: r["top1"])
    first, last = records[0], records[-1]
    row: dict[str, Any] = {
        "dataset": cell.dataset,
        "method": cell.method,
        "seed": cell.seed,
        "epochs": summary["epochs"],
        "final_top1": evaluated[-1]["top1"],
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "final_mean_class_acc": evaluated[-1]["mean_class_acc"],
        "best_mean_class_acc": max(r["mean_class_acc"] for r in evaluated),
        "final_gamma_mean": last.get("gamma_mean", math.nan),
        "max_gamma": max(r.get("gamma_max", math.nan) for r in records),
        "final_r_mean": last.get("r_mean", math.nan),
        "final_gamma_frac_gt1": last.get("gamma_frac_gt1", math.nan),
        "seconds": sum(r["seconds"] for r in records),
    }
    row.update(validation_columns(evaluated))
    for key in GEOMETRY:
        row[f"first_{key}"] = first.get(key, math.nan)
        row[f"final_{key}"] = last.get(key, math.nan)
    trajectory = [
        {
            "dataset": cell.dataset,
            "method": cell.method,
            "seed": cell.seed,
            "epoch": r["epoch"],
            "gamma_mean": r.get("gamma_mean", math.nan),
            "gamma_max": r.get("gamma_max", math.nan),
            "gamma_frac_gt1": r.get("gamma_frac_gt1", math.nan),
            "r_mean": r.get("r_mean", math.nan),
            "m_mean": r.get("m_mean", math.nan),
            "r_over_m_q50": r.get("r_over_m_q50", math.nan),
            "train_loss": r.get("train_loss", math.nan),
            "top1": r.get("top1", math.nan),
        }
        for r in records
    ]
    return row, trajectory
