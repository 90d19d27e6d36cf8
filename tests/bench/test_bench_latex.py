"""results.tex: the booktabs table is parsed back to the numbers, the bold and the daggers it
should hold; compiled with pdflatex where one is installed."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from carrot.bench.latex import latex_escape, latex_table
from carrot.bench.report import analyze, write_report

CELL = re.compile(
    r"^\$(?P<bold>\\mathbf\{)?(?P<mean>-?\d+\.\d+)(?: \\pm (?P<sd>\d+\.\d+))?\}?"
    r"(?:\^\{(?P<dagger>\\dagger)?(?P<ddagger>\\ddagger)?\})?\$$"
)


def _rows() -> list[dict]:
    # Two datasets; "a_x" beats ce by 2 points on every seed of d_1 (Holm-significant), "b" is
    # noise (and, by 0.1, the best on d2).
    rows = []
    for s in range(5):
        for d, base in (("d_1", 50.0), ("d2", 70.0)):
            rows.append({"dataset": d, "method": "ce", "seed": s, "final_top1": base + s})
            gain = 2.0 + 0.1 * (s % 2) if d == "d_1" else -1.0 + 0.8 * (-1) ** s
            rows.append({"dataset": d, "method": "a_x", "seed": s, "final_top1": base + s + gain})
            rows.append(
                {"dataset": d, "method": "b", "seed": s, "final_top1": base + s + 0.5 * (-1) ** s}
            )
    for r in rows:
        r["best_top1"] = r["final_mean_class_acc"] = r["final_top1"]
        r.update(final_gamma_mean=1.2, max_gamma=2.0, final_r_mean=0.3)
    return rows


def parse(tex: str) -> tuple[list[str], dict[str, dict[str, dict]]]:
    """The column heads and, per method, its baseline and each dataset's parsed cell."""
    body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    head = tex.split(r"\toprule", 1)[1].split(r"\midrule", 1)[0]
    columns = [c.strip() for c in head.strip().removesuffix(r"\\").split("&")]
    datasets = [re.sub(r"\\texttt\{(.*)\}", r"\1", c).replace(r"\_", "_") for c in columns[2:]]
    out: dict[str, dict[str, dict]] = {}
    for line in body.strip().splitlines():
        cells = [c.strip() for c in line.strip().removesuffix(r"\\").split("&")]
        method = re.sub(r"\\texttt\{(.*)\}", r"\1", cells[0]).replace(r"\_", "_")
        parsed: dict[str, dict] = {"baseline": {"name": cells[1]}}
        for d, cell in zip(datasets, cells[2:], strict=True):
            m = CELL.match(cell)
            assert m is not None, cell
            parsed[d] = {
                "mean": float(m["mean"]),
                "sd": None if m["sd"] is None else float(m["sd"]),
                "bold": m["bold"] is not None,
                "dagger": m["dagger"] is not None,
                "ddagger": m["ddagger"] is not None,
            }
        out[method] = parsed
    return datasets, out


def test_latex_table_parses_back_to_the_report() -> None:
    rows = _rows()
    comps = analyze(rows, {"a_x": "ce", "b": "ce"})
    tex = latex_table(rows, comps, caption="Study 100% & more", label="tab:x")
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    assert r"\begin{tabular}{llrr}" in tex and r"\label{tab:x}" in tex
    assert r"\caption{Study 100\% \& more final\_top1:" in tex
    datasets, table = parse(tex)
    assert datasets == ["d_1", "d2"] and list(table) == ["ce", "a_x", "b"]
    assert table["ce"]["baseline"]["name"] == "--"
    assert table["a_x"]["baseline"]["name"] == r"\texttt{ce}"
    finals = {(c.dataset, c.method): c for c in comps if c.metric == "final_top1"}
    for d in datasets:
        means = {
            m: statistics.mean(
                r["final_top1"] for r in rows if (r["dataset"], r["method"]) == (d, m)
            )
            for m in table
        }
        for m, cells in table.items():
            vals = [r["final_top1"] for r in rows if (r["dataset"], r["method"]) == (d, m)]
            assert cells[d]["mean"] == pytest.approx(statistics.mean(vals), abs=0.005)
            assert cells[d]["sd"] == pytest.approx(statistics.stdev(vals), abs=0.005)
            assert cells[d]["bold"] == (means[m] == max(means.values()))
            c = finals.get((d, m))
            assert cells[d]["dagger"] == (c is not None and c.holm_p < 0.05)
            assert cells[d]["ddagger"] == (c is not None and c.tost_holm_p < 0.05)
    assert table["a_x"]["d_1"]["dagger"] and table["a_x"]["d_1"]["bold"]
    assert table["b"]["d2"]["bold"] and not table["b"]["d_1"]["dagger"]


def test_latex_escape() -> None:
    assert latex_escape(r"a_b & c% {d} #1 $x ~y ^z \w") == (
        r"a\_b \& c\% \{d\} \#1 \$x \textasciitilde{}y \textasciicircum{}z \textbackslash{}w"
    )


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    rows = _rows()
    comps = analyze(rows, {"a_x": "ce", "b": "ce"})
    text = write_report(tmp_path / "r", rows, [], comps, header="## test\n\n")
    for name in ("results.csv", "comparisons.csv", "results.md", "results.tex", "cd_diagram.png",
                 "friedman.csv", "differences.png"):  # fmt: skip
        assert (tmp_path / "r" / name).is_file(), name
    assert "Holm's step-down" in text and "final_top1 on all datasets (4 tests)" in text
    assert "### Ranks across datasets (Friedman, Nemenyi)" in text
    header = (tmp_path / "r" / "comparisons.csv").read_text().splitlines()[0].split(",")
    assert "holm_p" in header and "effect_size" in header and "mdd" in header
    one = [r for r in rows if r["dataset"] == "d2"]
    write_report(tmp_path / "r", one, [], analyze(one, {"a_x": "ce", "b": "ce"}), header="")
    assert not (tmp_path / "r" / "cd_diagram.png").exists()  # one dataset: no stale diagram


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_table_compiles(tmp_path: Path) -> None:
    rows = _rows()
    tex = latex_table(rows, analyze(rows, {"a_x": "ce", "b": "ce"}), caption="carrot_study")
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + tex
    (tmp_path / "t.tex").write_text(doc + "\\end{document}\n")
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "t.pdf").is_file()
