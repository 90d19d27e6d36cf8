"""carrot bench accuracy on a tiny grid: runs through the trainer, reports, resumes, refuses mixing."""

from __future__ import annotations

import json

import pytest

import carrot.bench.accuracy as acc

pytestmark = pytest.mark.slow

TINY = acc.DatasetSpec(
    "tiny synthetic",
    (
        "data.name=synthetic",
        "data.options.num_superclasses=3",
        "data.options.classes_per_superclass=3",
        "data.options.train_per_class=8",
        "data.options.test_per_class=4",
        "data.options.image_size=16",
        "data.options.difficulty=0.0",
        "data.image_size=16",
        "train.batch_size=12",
        "train.epochs=2",
        "train.max_steps_per_epoch=3",
        "train.device=cpu",
        *acc._CNN,
    ),
)


@pytest.fixture
def tiny_suite(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(acc.DATASETS, "tiny", TINY)
    monkeypatch.setitem(
        acc.SUITES, "test", acc.Suite("tiny", (("tiny", ("ce", "carrot_l1")),), (0, 1))
    )
    return "test"


def test_grid_reports_and_resumes(tiny_suite: str, tmp_path) -> None:
    table = acc.run_suite(tiny_suite, tmp_path, progress=False)
    report = tmp_path / "test"
    for name in (
        "results.csv",
        "trajectories.csv",
        "comparisons.csv",
        "results.md",
        "differences.png",
        "geometry.png",
    ):
        assert (report / name).is_file(), name
    assert "CARROT CE+KL, λ=1 (guide)" in table and "vs ce" in table
    run = acc.Cell("tiny", "carrot_l1", 1).run_dir(tmp_path)
    stamp = (run / "summary.json").stat().st_mtime_ns
    acc.run_suite(tiny_suite, tmp_path, progress=False)  # finished cells are not rerun
    assert (run / "summary.json").stat().st_mtime_ns == stamp
    again = acc.run_suite(tiny_suite, tmp_path, progress=False, report_only=True)
    body = lambda text: text.split("\n\n", 2)[2]  # noqa: E731  (after the header with the timing)
    assert body(again) == body(table)


def test_interrupted_cell_resumes_from_its_checkpoint(tiny_suite: str, tmp_path) -> None:
    cell = acc.Cell("tiny", "ce", 0)
    acc.run_cell(cell, tmp_path, extra=["train.stop_after_steps=2"])
    run = cell.run_dir(tmp_path)
    assert json.loads((run / "summary.json").read_text())["stopped_early"]
    acc.run_cell(cell, tmp_path, extra=["train.stop_after_steps=2"])
    assert not json.loads((run / "summary.json").read_text())["stopped_early"]


def test_runs_with_other_settings_are_not_paired(tiny_suite: str, tmp_path) -> None:
    import yaml

    cell = acc.Cell("tiny", "ce", 0)
    acc.run_cell(cell, tmp_path)
    with pytest.raises(ValueError, match=r"was run with other settings \(train.lr\)"):
        acc.run_cell(cell, tmp_path, extra=["train.lr=0.5"])
    # A run saved before a key existed: the key counts as its default, nothing else.
    saved = cell.run_dir(tmp_path) / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["carrot"]["lam_warmup"]
    saved.write_text(yaml.safe_dump(old))
    acc.run_cell(cell, tmp_path)  # reused
    with pytest.raises(ValueError, match=r"other settings \(carrot.lam_warmup\)"):
        acc.run_cell(cell, tmp_path, extra=["carrot.lam_warmup=0.5"])


def test_unknown_names(tiny_suite: str, tmp_path) -> None:
    with pytest.raises(ValueError, match="--suite must be one of"):
        acc.run_suite("nope", tmp_path)
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['arcface'\]"):
        acc.run_suite(tiny_suite, tmp_path, methods=["arcface"])
    with pytest.raises(ValueError, match="holds no finished run of this grid"):
        acc.run_suite(tiny_suite, tmp_path, report_only=True)
