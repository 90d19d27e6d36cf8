"""carrot bench accuracy with validation splits: the final epoch's test figures stay, the
validation-selected ones come in columns and a table of their own, never mixed with test-selected."""

from __future__ import annotations

import json
import math
from pathlib import Path

from carrot.bench.grid import Cell
from carrot.bench.report import collect, markdown

# Validation peaks at epoch 2, test at epoch 3.
EPOCHS = [(1, 50.0, 70.0), (2, 80.0, 60.0), (3, 70.0, 95.0), (4, 65.0, 90.0)]


def _run(out: Path, cell: Cell, *, val: bool) -> None:
    run = cell.run_dir(out)
    run.mkdir(parents=True)
    records = []
    for epoch, v, t in EPOCHS:
        rec = {"epoch": epoch, "top1": t, "mean_class_acc": t - 1, "seconds": 1.0}
        if val:
            rec |= {"val_top1": v, "val_mean_class_acc": v - 1}
        records.append(rec)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "summary.json").write_text(json.dumps({"epochs": 4}))


def test_validation_columns_beside_the_test_figures(tmp_path: Path) -> None:
    cells = [Cell("d", "ce", 0), Cell("d", "ce", 1), Cell("d", "carrot", 0)]
    for cell in cells:
        _run(tmp_path, cell, val=cell.method == "ce")
    rows = [collect(cell, tmp_path)[0] for cell in cells]
    ce, plain = rows[0], rows[2]
    assert ce["final_top1"] == 90.0 and ce["best_top1"] == 95.0  # test figures as before
    assert ce["final_val_top1"] == 65.0 and ce["val_best_epoch"] == 2
    assert ce["val_selected_top1"] == 60.0  # test top-1 of the epoch validation chose
    assert rows[0].keys() == plain.keys()  # one CSV header for runs with and without a split
    assert math.isnan(plain["val_selected_top1"]) and math.isnan(plain["val_best_epoch"])
    text = markdown(rows, [])
    assert "| best top-1 (on test) |" in text
    assert "| ce | 2 | 65.00 | 60.00 |" in text  # the validation table: ce only
    assert "| carrot | 1 | " in text and text.count("| carrot |") == 2  # results, geometry
    assert "chosen on test" in text
    assert "Selected on validation" not in markdown(rows[2:], [])
