"""Validation-selected figures of bench runs (runs with ``data.val_split``), kept apart from the
test-selected ones: columns of results.csv and a table of their own in results.md."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["validation_columns", "validation_table"]


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


def _mean(rs: Sequence[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rs if key in r and not math.isnan(float(r[key]))]
    return statistics.mean(vals) if vals else math.nan


def validation_columns(evaluated: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The validation-selected figures of a run's evaluated epochs (NaN without a split)."""
    validated = [r for r in evaluated if "val_top1" in r]
    if not validated:
        return {
            "final_val_top1": math.nan,
            "val_best_epoch": math.nan,
            "val_selected_top1": math.nan,
        }
    # The trainer's choice: the first maximum, of the EMA model where there is one.
    chosen = max(validated, key=lambda r: r.get("val_top1_ema", r["val_top1"]))
    return {
        "final_val_top1": validated[-1]["val_top1"],
        "val_best_epoch": chosen["epoch"],
        "val_selected_top1": chosen["top1"],
    }


def validation_table(
    rows: Sequence[dict[str, Any]],
    dataset: str,
    methods: Sequence[str] | Mapping[str, None],
    method_labels: Mapping[str, str],
) -> list[str]:
    """Per method, the runs' validation-selected figures, where they have a validation split."""
    out = []
    for method in methods:
        rs = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
        picked = [r for r in rs if not math.isnan(float(r.get("val_selected_top1", math.nan)))]
        if picked:
            out.append(
                f"| {method_labels.get(method, method)} | {len(picked)} "
                f"| {_fmt(_mean(picked, 'final_val_top1'))} "
                f"| {_fmt(_mean(picked, 'val_selected_top1'))} |"
            )
    if not out:
        return []
    return [
        "Selected on validation (`data.val_split`): test top-1 of the epoch of highest validation "
        "top-1, mean over seeds (unlike best top-1 above, which is chosen on test):\n",
        "| method | n | final validation top-1 | test top-1 at the best validation epoch |",
        "|---|---:|---:|---:|",
        *out,
        "",
    ]
