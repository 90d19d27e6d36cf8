"""The validation split (data.val_split): stratified, disjoint, seeded on its own; best.pt and the
"best" row chosen on it; recorded in the run folder and checked on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from carrot.cli import main
from carrot.train import Trainer, format_summary, load_config
from carrot.train.config import ConfigError
from carrot.train.data import load_splits
from carrot.train.holdout import (
    VAL_SPLIT_FILE,
    check_val_split,
    holdout_per_class,
    val_record,
)

SYNTH = [
    "data.name=synthetic",
    "data.options.num_superclasses=2",
    "data.options.classes_per_superclass=3",
    "data.options.train_per_class=10",
    "data.options.test_per_class=3",
    "data.options.image_size=8",
]


def _val_ids(overrides: list[str]) -> list[str]:
    cfg = load_config(None, [*SYNTH, "data.val_split=fraction", *overrides])
    record = val_record(cfg, load_splits(cfg).val)
    assert record is not None
    return list(record["ids"])


def test_fraction_split_is_stratified_and_leaves_train_and_test_apart() -> None:
    cfg = load_config(None, [*SYNTH, "data.val_split=fraction", "data.val_fraction=0.3"])
    splits = load_splits(cfg)
    assert splits.val is not None
    full = load_splits(load_config(None, SYNTH)).train
    train_idx, val_idx = splits.train.indices, splits.val.indices  # type: ignore[attr-defined]
    # Stratified: round(0.3 · 10) = 3 of every class, 7 left for training.
    np.testing.assert_array_equal(np.bincount(splits.val.labels), [3] * 6)
    np.testing.assert_array_equal(np.bincount(splits.train.labels), [7] * 6)
    # Disjoint from train, together the whole training split, labels carried along.
    assert not set(train_idx) & set(val_idx)
    assert sorted([*train_idx, *val_idx]) == list(range(len(full)))
    np.testing.assert_array_equal(splits.val.labels, full.labels[val_idx])
    # Disjoint from test: every validation image is a training image, none is a test image.
    val_images = torch.stack([splits.val.load(i) for i in range(len(splits.val))])
    test_images = torch.stack([splits.test.load(i) for i in range(len(splits.test))])
    assert torch.equal(val_images, full.images[torch.from_numpy(val_idx)])  # type: ignore[attr-defined]
    same = (val_images[:, None] == test_images[None]).flatten(2).all(2)
    assert not same.any()
    assert splits.val.classes == splits.test.classes


def test_digits_fraction_split() -> None:
    cfg = load_config(None, ["data.name=digits", "data.val_split=fraction"])
    splits = load_splits(cfg)
    full = load_splits(load_config(None, ["data.name=digits"])).train
    assert splits.val is not None
    per_class = np.bincount(full.labels)
    np.testing.assert_array_equal(np.bincount(splits.val.labels), np.round(0.1 * per_class))
    assert len(splits.train) + len(splits.val) == len(full)
    assert not set(splits.train.indices) & set(splits.val.indices)  # type: ignore[attr-defined]


def test_the_split_depends_on_val_seed_alone() -> None:
    base = _val_ids([])
    assert _val_ids(["seed=7", "method=ce"]) == base
    assert _val_ids(["seed=3", "method=carrot", "train.lr=0.1"]) == base
    assert _val_ids(["data.val_seed=1"]) != base
    assert _val_ids(["data.val_seed=1", "seed=9"]) == _val_ids(["data.val_seed=1"])


def test_the_split_is_drawn_before_the_subset() -> None:
    """subset_per_class cuts the images left after the split: the validation images stay."""
    assert _val_ids(["data.subset_per_class=4"]) == _val_ids([])
    cfg = load_config(None, [*SYNTH, "data.val_split=fraction", "data.subset_per_class=4"])
    splits = load_splits(cfg)
    np.testing.assert_array_equal(np.bincount(splits.train.labels), [4] * 6)
    assert splits.val is not None and len(splits.val) == 6  # round(0.1 · 10) = 1 per class


def test_every_class_keeps_one_image_and_gives_one() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2])
    val = holdout_per_class(labels, ["a", "b", "c"], fraction=0.9, seed=0)
    counts = np.bincount(labels[val], minlength=3)
    np.testing.assert_array_equal(counts, [1, 9, 2])  # min(max(1, round(0.9 n)), n - 1)
    small = holdout_per_class(labels, ["a", "b", "c"], fraction=0.01, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[small], minlength=3), [1, 1, 1])


def test_a_class_of_one_image_is_refused_by_name() -> None:
    labels = np.array([0, 0, 1, 2, 2])
    with pytest.raises(ConfigError, match=r"class 'Cessna 172' has 1: it cannot give"):
        holdout_per_class(labels, ["707", "Cessna 172", "A380"], fraction=0.5, seed=0)


def test_val_fraction_range_and_official_without_one_are_refused(capsys) -> None:
    for bad in ("0", "1", "1.5"):
        with pytest.raises(ConfigError, match=r"data.val_fraction must be in \(0, 1\)"):
            load_config(None, [f"data.val_fraction={bad}"])
    with pytest.raises(ConfigError, match=r"data.val_split must be one of"):
        load_config(None, ["data.val_split=test"])
    assert main(["train", "data.name=digits", "data.val_split=official"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "data.val_split=official needs a dataset with its own validation split" in err[0]
    assert "(aircraft, flowers102, imagefolder)" in err[0] and "data.name=digits" in err[0]


def test_resume_check_refuses_a_changed_split(tmp_path: Path) -> None:
    cfg = load_config(None, [*SYNTH, "data.val_split=fraction"])
    record = val_record(cfg, load_splits(cfg).val)
    assert record is not None
    entry = {"count": record["count"], "sha256": record["sha256"]}
    check_val_split(entry, record, tmp_path)  # unchanged: fine
    check_val_split(None, None, tmp_path)  # no split before nor now: fine
    with pytest.raises(ConfigError, match=r"validation split differs .* \(none → 6 images"):
        check_val_split(None, record, tmp_path)
    with pytest.raises(ConfigError, match=r"\(6 images, sha256 0{12} → 6 images"):
        check_val_split({"count": 6, "sha256": "0" * 64}, record, tmp_path)


def _summary(on: str) -> dict[str, Any]:
    rec = {"epoch": 2, "top1": 61.0, "mean_class_acc": 60.0}
    if on == "val":
        rec["val_top1"] = 80.0
    return {
        "run_dir": "r",
        "dataset": "d",
        "method": "ce",
        "seed": 0,
        "epochs": 3,
        "val_split": "fraction" if on == "val" else "none",
        "best_selected_on": on,
        "final": {**rec, "epoch": 3},
        "best": rec,
    }


def test_the_table_names_what_chose_best() -> None:
    on_val = format_summary(_summary("val"))
    assert "best on val (epoch 2)" in on_val and "val top-1 %" in on_val
    assert "highest validation top-1 (data.val_split=fraction)" in on_val
    assert "TEST" not in on_val
    on_test = format_summary(_summary("test"))
    assert "best on test (epoch 2)" in on_test and "val top-1" not in on_test
    assert "highest TEST top-1 (no validation split: test-set selection" in on_test


# --- runs -----------------------------------------------------------------------------------

RUN = [
    *SYNTH,
    "data.image_size=8",
    "train.batch_size=6",
    "train.k=2",
    "train.max_steps_per_epoch=1",
    "train.epochs=3",
    "train.progress=false",
    "train.plots=false",
    "train.retrieval=false",
    "train.device=cpu",
    "train.loggers=[csv]",
    "method=ce",
]

# Validation and test disagree: validation peaks at epoch 2, test at epoch 3.
SCRIPT = {1: (50.0, 90.0), 2: (80.0, 60.0), 3: (70.0, 95.0)}


def _scripted(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Replace the evaluation by the metrics of SCRIPT; returns whether each call saw a
    validation loader."""
    import carrot.train.loop as loop

    seen: list[bool] = []

    def fake(model: Any, ema: Any, test: Any, val: Any, **kwargs: Any) -> dict[str, float]:
        seen.append(val is not None)
        v, t = SCRIPT[len(seen)]
        out = {"top1": t, "mean_class_acc": t - 1}
        if val is not None:
            out |= {"val_top1": v, "val_mean_class_acc": v - 1}
        return out

    monkeypatch.setattr(loop, "evaluate_splits", fake)
    return seen


@pytest.mark.parametrize(("split", "best"), [("fraction", 2), ("none", 3)])
def test_best_follows_validation_where_there_is_a_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str, best: int
) -> None:
    seen = _scripted(monkeypatch)
    run = tmp_path / "run"
    cfg = load_config(None, [*RUN, f"data.val_split={split}", f"output_dir={run}"])
    summary = Trainer(cfg).fit()
    assert seen == [split != "none"] * 3
    assert summary["best_selected_on"] == ("val" if split != "none" else "test")
    assert summary["best"]["epoch"] == best
    assert summary["best"]["top1"] == SCRIPT[best][1]  # the test figure of the chosen epoch
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert (
        ckpt["state"]["epoch"] == best and ckpt["best_selected_on"] == summary["best_selected_on"]
    )
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("is_best", False) for r in records] == [True, best == 2, best == 3]
    assert (
        json.loads((run / "summary.json").read_text())["best_selected_on"]
        == (summary["best_selected_on"])
    )
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert ("val_top1" in header) == (split != "none")
    assert (run / VAL_SPLIT_FILE).is_file() == (split != "none")


def test_a_real_run_records_val_metrics_and_selects_on_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(
        None, [*RUN, "data.val_split=fraction", "data.val_fraction=0.3", f"output_dir={run}"]
    )
    summary = Trainer(cfg).fit()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert {"val_top1", "val_mean_class_acc", "top1", "mean_class_acc"} <= r.keys()
        hits = r["val_top1"] * 18 / 100  # 18 validation images
        assert hits == pytest.approx(round(hits), abs=1e-9)
    scores = [r["val_top1"] for r in records]
    assert summary["best"]["epoch"] == records[scores.index(max(scores))]["epoch"]
    assert summary["best"]["top1"] == records[scores.index(max(scores))]["top1"]
    saved = json.loads((run / VAL_SPLIT_FILE).read_text())
    assert saved["count"] == 18 and len(saved["ids"]) == 18 and saved["val_seed"] == 0
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["val_split"] == {"count": 18, "sha256": saved["sha256"]}


def test_resume_with_a_changed_split_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = tmp_path / "run"
    start = [*RUN, "data.val_split=fraction", f"output_dir={run}", "train.stop_after_steps=1"]
    Trainer(load_config(None, start)).fit()
    # A changed setting: refused by the resume rules, one line.
    assert main(["train", "--resume", str(run), "data.val_seed=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot change data.val_seed when resuming" in err[0], err
    # The same settings drawing other images (data or code changed): refused by the record.
    import carrot.train.holdout as holdout

    real = holdout.holdout_per_class
    monkeypatch.setattr(holdout, "holdout_per_class", lambda *a, **k: np.sort(real(*a, **k) + 1))
    with pytest.raises(ConfigError, match=r"the validation split differs from the one"):
        Trainer.resume(run)
    monkeypatch.setattr(holdout, "holdout_per_class", real)
    assert Trainer.resume(run).fit()["epochs"] == 3
