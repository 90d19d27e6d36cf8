"""The study's plumbing: the method list, the generated suite, and the docs section built from the
reports (scripts/study.sh run for real with no training part)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from carrot.bench.report import analyze, write_report
from carrot.bench.suites import suite_from_dict

REPO = Path(__file__).resolve().parents[2]


def _study() -> Any:
    """benchmarks/study.py, a developer's script outside the installed package."""
    spec = importlib.util.spec_from_file_location("study", REPO / "benchmarks" / "study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_S = _study()
BEGIN, END, parse_methods_json, render = _S.BEGIN, _S.END, _S.parse_methods_json, _S.render
study_suite, write_doc = _S.study_suite, _S.write_doc


def test_parse_methods_json_forms() -> None:
    assert parse_methods_json('["ce", "carrot"]') == ["ce", "carrot"]
    assert parse_methods_json(
        '[{"name": "ce"}, {"name": "mixup+carrot", "baseline": "mixup"}]'
    ) == [
        "ce",
        "mixup+carrot",
    ]
    assert parse_methods_json('{"methods": {"ce": {}, "isda": {}}}') == ["ce", "isda"]
    # The registry's listing (carrot methods --json) names base methods and marks carrot addable:
    # the study adds X+carrot wherever the registry would accept it.
    listing = [
        {"name": "ce", "baseline": None, "addable": False},
        {"name": "label_smoothing", "section": "label_smoothing", "addable": False},
        {"name": "carrot", "section": "carrot", "addable": True, "needs_hard_labels": True},
        {"name": "supcon", "section": "supcon", "addable": False},
        {"name": "supcon_carrot", "section": "supcon", "reads": ["carrot"], "addable": False},
        {"name": "mixup", "section": "mixup", "mixes_inputs": True, "addable": False},
        {"name": "isda", "section": "isda", "addable": False},
        {"name": "maxent", "section": "maxent", "addable": True, "expands": False},
    ]
    assert parse_methods_json(json.dumps(listing)) == [
        "ce", "label_smoothing", "carrot", "supcon", "supcon_carrot", "mixup", "isda", "maxent",
        "label_smoothing+carrot", "supcon+carrot", "isda+carrot", "maxent+carrot",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="must give a list or a mapping"):
        parse_methods_json("3")


def test_study_suite_takes_the_method_list() -> None:
    data = study_suite(["label_smoothing", "carrot", "mixup", "mixup+carrot"])
    assert data["methods"] == [
        "ce",
        "label_smoothing",
        "carrot",
        "mixup",
        "mixup+carrot",
        "carrot_guide",
    ]
    # Names the bench does not know yet run as `method=NAME` against their base method.
    assert data["variants"]["mixup+carrot"] == {
        "baseline": "mixup",
        "overrides": {"method": "mixup+carrot"},
    }
    known = study_suite(["carrot", "supcon", "supcon_carrot"])
    assert "variants" not in known
    suite = suite_from_dict(known, name="study", source="study.yaml")
    assert suite.methods["supcon_carrot"].baseline == "supcon"
    assert set(dict(suite.grid)) == {"digits", "fmnist100", "synth_hard", "synth_hard_ft"}


def _rows(methods: list[str], datasets: list[str]) -> list[dict]:
    rows = []
    for d_i, d in enumerate(datasets):
        for m_i, m in enumerate(methods):
            for s in range(5):
                top1 = (
                    50.0
                    + 10 * d_i
                    + s
                    + (2.0 + 0.1 * (s % 2) if m == "better" else 0.3 * m_i * (-1) ** s)
                )
                rows.append(
                    {"dataset": d, "method": m, "seed": s, "final_top1": top1, "best_top1": top1,
                     "final_mean_class_acc": top1, "final_gamma_mean": 1.1, "max_gamma": 2.0,
                     "final_r_mean": 0.3, "final_gamma_frac_gt1": 0.25}
                )  # fmt: skip
    return rows


def _fake_study(out: Path, methods: list[str]) -> None:
    baselines = {m: "ce" for m in methods if m != "ce"}
    for name in ("study_dev", "study_heldout"):
        rows = _rows(methods, ["digits", "synth_hard"])
        write_report(out / name, rows, [], analyze(rows, baselines), header="")
    rows = _rows(["ce", "recipe", "factor1"], ["synth_hard_ft"])
    write_report(
        out / "ablation", rows, [], analyze(rows, {"recipe": "ce", "factor1": "recipe"}), header=""
    )
    (out / "times.tsv").write_text(
        "dev\t1200\tcarrot bench accuracy --suite results/study/study.yaml --seeds 0-4\n"
        "ablation\t300\tcarrot bench accuracy --suite ablation --seeds 0-4\n"
    )


def test_render_and_write_doc(tmp_path: Path) -> None:
    methods = ["ce", "carrot", "better"]
    out = tmp_path / "out"
    _fake_study(out, methods)
    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    page.write_text("# Results\n\nkept text\n")
    write_doc(out, page, [*methods, "never_run"])
    text = page.read_text()
    assert text.startswith("# Results\n\nkept text\n") and BEGIN in text and END in text
    assert "**Missing from the study: never_run.**" in text
    assert "Total: 25.0 min." in text and "--seeds 0-4   # 20.0 min" in text
    for m in methods:
        assert f"| `{m}` |" in text
    assert "| `better` vs `ce` | `digits` | **+2.04 [" in text  # Holm-significant: bold
    line = next(x for x in text.splitlines() if x.startswith("| `better` vs `ce` | `digits` |"))
    assert line.endswith(" | better |") and " / " in line  # the verdict, the seeds for ±δ
    assert "Holm-significant gains: `better` vs `ce` on `digits` (+2.04)" in text
    assert "- Equivalent within ±0.5 (TOST, Holm): " in text
    assert "#### Development seeds 0–4\n" in text and "one at a time (seeds 0–4)" in text
    assert "Friedman test over 3 methods" in text and "| `better` | 1.00 |" in text
    assert "(img/study_dev_cd_diagram.png)" in text
    assert (tmp_path / "docs" / "img" / "study_dev_cd_diagram.png").is_file()
    assert "| `factor1` vs `recipe` | `synth_hard_ft` |" in text and " 25% |" in text
    page.write_text(text.replace("(to be written from the numbers above)", "CARROT: no gain."))
    write_doc(out, page, methods)  # rewritten in place, not appended; the verdict is kept
    again = page.read_text()
    assert again.count(BEGIN) == 1 and "never_run" not in again and "kept text" in again
    assert "#### Verdict\n\nCARROT: no gain.\n\n" + END in again
    empty = render(tmp_path / "nothing", tmp_path / "img", methods)
    assert "(no report in" in empty


@pytest.mark.slow
def test_study_script_plumbing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _fake_study(out, ["ce", "carrot", "better"])
    page = tmp_path / "results.md"
    env = {
        **os.environ,
        "METHODS": "ce carrot mixup+carrot",
        "PARTS": "",
        "DOC": str(page),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO / "src"),
    }
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "study.sh"), str(out)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "methods.txt").read_text().split() == ["ce", "carrot", "mixup+carrot"]
    suite = (out / "study.yaml").read_text()
    assert "mixup+carrot" in suite and "synth_hard_ft" in suite
    assert "**Missing from the study: mixup+carrot.**" in page.read_text()
    bad = subprocess.run(
        ["bash", str(REPO / "scripts" / "study.sh"), str(out)],
        capture_output=True, text=True, env={**env, "PARTS": "nope"}, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown part nope" in bad.stderr
