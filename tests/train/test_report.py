"""carrot.train.report: the run summary."""

from __future__ import annotations


def test_the_summary_shows_undefined_retrieval_as_n_a() -> None:
    from carrot.train.report import format_summary

    summary = {
        "dataset": "d", "method": "ce", "seed": 0, "epochs": 2, "run_dir": "r",
        "final": {"epoch": 2, "top1": 50.0, "mean_class_acc": 50.0},
        "best": {"epoch": 1, "top1": 60.0, "mean_class_acc": 60.0, "precision_at_1": 40.0},
    }  # fmt: skip
    final = next(line for line in format_summary(summary).splitlines() if "final" in line)
    assert final.split("|")[4].strip() == "n/a" and final.split("|")[2].strip() == "50.00"
