"""A bench report is written whole or not at all, and a broken run file is one line naming it
before anything is written (issue 32, item 6; also ``|`` in labels, formula-like CSV cells and
report names that are the grid's own folders)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import carrot.bench.report as report_module
from carrot.bench import accuracy as acc
from carrot.bench.suites import suite_from_dict
from cli_run import carrot_cli, one_line_error

SUITE = {
    "seeds": [0, 1],
    "datasets": {"d": {"overrides": ["data.name=digits"]}},
    "methods": ["ce", "better"],
    "variants": {"better": {"label": "better | new", "baseline": "ce", "overrides": ["method=carrot"]}},
}  # fmt: skip


def _run(out: Path, method: str, seed: int, top1: Any = None) -> Path:
    run = out / "runs" / "d" / method / f"s{seed}"
    run.mkdir(parents=True, exist_ok=True)
    value = 50.0 + seed + (5 if method == "better" else 0) if top1 is None else top1
    (run / "summary.json").write_text(json.dumps({"epochs": 1, "stopped_early": False}))
    record = {"epoch": 1, "seconds": 1.5, "gamma_mean": 1.1, "mean_class_acc": 40.0}
    line = json.dumps({**record, "top1": 0.0}).replace("0.0}", f"{value}}}")
    (run / "metrics.jsonl").write_text(line + "\n")
    return run


def _grid(out: Path) -> None:
    for method in ("ce", "better"):
        for seed in (0, 1):
            _run(out, method, seed)


def _suite() -> Any:
    return suite_from_dict(SUITE, name="s", source="s.yaml")


def _old_report(out: Path) -> dict[str, bytes]:
    """A report of before (as a rerun finds it), and its files."""
    (out / "s").mkdir()
    for name in ("results.csv", "results.md", "cd_diagram.png"):
        (out / "s" / name).write_text(f"old {name}")
    return _snapshot(out / "s")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("top1", "message"),
    [
        ("NaN", "non-finite number NaN"),
        ("Infinity", "non-finite number Infinity"),
        ("-Infinity", "non-finite number -Infinity"),
        ("1e400", "non-finite number 1e400"),
        ("1e308", r"top1 must be in \[0, 100\]"),
        ("150.5", r"top1 must be in \[0, 100\]"),
        ("-0.1", r"top1 must be in \[0, 100\]"),
        ('"high"', r"top1 must be in \[0, 100\]"),
        ("null", r"top1 must be in \[0, 100\]"),
    ],
)
def test_a_broken_metric_is_one_line_and_the_old_report_stays(
    tmp_path: Path, top1: str, message: str
) -> None:
    _grid(tmp_path)
    before = _old_report(tmp_path)
    bad = _run(tmp_path, "better", 1, top1=top1)
    with pytest.raises(ValueError, match=message) as e:
        acc.run_suite(_suite(), tmp_path, progress=False, report_only=True)
    assert str(bad / "metrics.jsonl") in str(e.value)
    assert _snapshot(tmp_path / "s") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "s"]


def test_a_broken_summary_is_named_too(tmp_path: Path) -> None:
    _grid(tmp_path)
    run = tmp_path / "runs" / "d" / "ce" / "s0"
    (run / "summary.json").write_text('{"epochs": 1, "final": {"top1": NaN}}')
    with pytest.raises(ValueError, match=r"s0/summary.json holds the non-finite number NaN"):
        acc.run_suite(_suite(), tmp_path, progress=False, report_only=True)
    (run / "summary.json").write_text('{"epochs": 1, ')
    with pytest.raises(ValueError, match=r"s0/summary.json is not valid JSON"):
        acc.run_suite(_suite(), tmp_path, progress=False, report_only=True)
    assert not (tmp_path / "s").exists()


def test_a_failure_while_writing_leaves_the_old_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _grid(tmp_path)
    before = _old_report(tmp_path)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("matplotlib failed")

    monkeypatch.setattr(report_module, "plot", broken)
    with pytest.raises(RuntimeError, match="matplotlib failed"):
        acc.run_suite(_suite(), tmp_path, progress=False, report_only=True)
    assert _snapshot(tmp_path / "s") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "s"]


def test_labels_cannot_break_the_markdown_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _grid(tmp_path)
    monkeypatch.setattr(report_module, "plot", lambda *args, **kwargs: [])  # not under test
    text = acc.run_suite(_suite(), tmp_path, progress=False, report_only=True)
    assert "better \\| new" in (tmp_path / "s" / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| better \\| new |")]
    header = next(line for line in text.splitlines() if line.startswith("| method | n |"))
    assert rows
    cells = rows[0].replace("\\|", "").count("|")
    assert cells == header.count("|")


@pytest.mark.parametrize("name", ["runs", "pretrain", "slurm"], ids=["r", "p", "s"])
def test_a_report_named_as_the_grids_own_folders_is_refused(tmp_path: Path, name: str) -> None:
    _grid(tmp_path)
    with pytest.raises(
        ValueError, match=f"--report-name .* must not be one of runs, pretrain, slurm.*{name!r}"
    ):
        acc.run_suite(_suite(), tmp_path, progress=False, report_only=True, report_name=name)
    assert sorted(p.name for p in (tmp_path / "runs" / "d").iterdir()) == ["better", "ce"]


@pytest.mark.slow
def test_the_cli_says_it_in_one_line(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps(SUITE))
    out = tmp_path / "out"
    _grid(out)
    bad = _run(out, "ce", 1, top1="NaN")
    done = carrot_cli("bench", "accuracy", "--suite", suite, "--out", out, "--report-only")
    one_line_error(done, str(bad / "metrics.jsonl"), "NaN")
    assert not (out / "s").exists()
    done = carrot_cli(
        "bench",
        "accuracy",
        "--suite",
        suite,
        "--out",
        out,
        "--report-only",
        "--report-name",
        "runs",
    )
    one_line_error(done, "--report-name", "runs")
