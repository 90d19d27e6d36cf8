"""Ranks across datasets: the Friedman statistic, Iman–Davenport, the Nemenyi critical difference
and the CD diagram, against hand computations from Demšar (2006)."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

from carrot.bench.ranks import cd_diagram, critical_difference, friedman, friedman_markdown


def _rows(table: dict[str, list[float]], datasets: list[str], seeds: int = 1) -> list[dict]:
    """Runs whose mean over seeds is the table's value (seeds spread ±0.5 around it)."""
    rows = []
    for method, values in table.items():
        for d, v in zip(datasets, values, strict=True):
            for s in range(seeds):
                spread = 0.0 if seeds == 1 else (s - (seeds - 1) / 2) / (seeds - 1)
                rows.append({"dataset": d, "method": method, "seed": s, "final_top1": v + spread})
    return rows


# Four datasets, three methods, no ties: a is best on 3 of 4.
TABLE = {
    "a": [90.0, 80.0, 70.0, 60.0],
    "b": [85.0, 82.0, 65.0, 55.0],
    "c": [80.0, 75.0, 60.0, 58.0],
}
DATASETS = ["d1", "d2", "d3", "d4"]


def test_friedman_by_hand() -> None:
    # Ranks (1 = best): d1 a1 b2 c3; d2 b1 a2 c3; d3 a1 b2 c3; d4 a1 c2 b3.
    # Mean ranks R = (a 1.25, b 2.0, c 2.75). Demšar's (3):
    # χ²_F = 12N / (k(k+1)) · (Σ R_j² − k(k+1)²/4) = 12·4/12 · (1.5625 + 4 + 7.5625 − 12) = 4.5.
    result = friedman(_rows(TABLE, DATASETS, seeds=3))
    assert not isinstance(result, str)
    assert result.methods == ("a", "b", "c") and result.datasets == tuple(DATASETS)
    assert dict(result.mean_ranks) == pytest.approx({"a": 1.25, "b": 2.0, "c": 2.75})
    assert result.ranks[1] == (2.0, 1.0, 3.0) and result.ranks[3] == (1.0, 3.0, 2.0)
    n, k, chi2 = 4, 3, 4.5
    assert result.chi2 == pytest.approx(chi2)
    assert result.p_value == pytest.approx(stats.chi2.sf(chi2, k - 1))
    # Iman–Davenport: F_F = (N − 1) χ²_F / (N (k − 1) − χ²_F) = 3 · 4.5 / (8 − 4.5), F(2, 6).
    ff = 3 * 4.5 / 3.5
    assert result.iman_davenport == pytest.approx(ff)
    assert result.iman_davenport_p == pytest.approx(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))
    # Seeds are averaged first: the table of means is the table.
    assert result.scores[0] == pytest.approx((90.0, 85.0, 80.0))


def test_friedman_with_ties_uses_the_tie_corrected_statistic() -> None:
    # d1: a and b tie for best (ranks 1.5, 1.5, 3). With ties the statistic is
    # (12 / (N k (k+1)) Σ R_sum_j² − 3 N (k+1)) / (1 − Σ (t³ − t) / (N k (k² − 1))).
    table = {"a": [90.0, 80.0, 70.0], "b": [90.0, 70.0, 60.0], "c": [80.0, 75.0, 50.0]}
    result = friedman(_rows(table, ["d1", "d2", "d3"]))
    assert not isinstance(result, str)
    n, k = 3, 3
    sums = [1.5 + 1 + 1, 1.5 + 3 + 2, 3 + 2 + 3]
    raw = 12 / (n * k * (k + 1)) * sum(s * s for s in sums) - 3 * n * (k + 1)
    correction = 1 - (2**3 - 2) / (n * k * (k * k - 1))
    assert result.chi2 == pytest.approx(raw / correction)
    assert result.ranks[0] == (1.5, 1.5, 3.0)


@pytest.mark.parametrize(
    ("k", "q"),
    # Demšar (2006), Table 5(a): critical values q_0.05 of the Nemenyi test (two-tailed).
    [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850), (7, 2.949), (8, 3.031),
     (9, 3.102), (10, 3.164)],
)  # fmt: skip
def test_critical_difference_matches_demsar_table(k: int, q: float) -> None:
    n = 7
    assert critical_difference(k, n) == pytest.approx(
        q * math.sqrt(k * (k + 1) / (6 * n)), abs=2e-3
    )


def test_nemenyi_p_values_agree_with_the_critical_difference() -> None:
    # Six datasets, five methods with a clear order on most of them.
    table = {
        "m1": [95, 90, 85, 80, 75, 70],
        "m2": [94, 91, 84, 79, 74, 69],
        "m3": [90, 85, 86, 75, 70, 68],
        "m4": [85, 80, 75, 81, 65, 60],
        "m5": [80, 75, 70, 65, 76, 59],
    }
    datasets = [f"d{i}" for i in range(6)]
    result = friedman(_rows({m: [float(x) for x in v] for m, v in table.items()}, datasets))
    assert not isinstance(result, str)
    k, n = 5, 6
    assert result.cd == pytest.approx(critical_difference(k, n))
    se = math.sqrt(k * (k + 1) / (6 * n))
    for i, a in enumerate(result.methods):
        for j, b in enumerate(result.methods):
            if i == j:
                continue
            gap = abs(result.mean_ranks[a] - result.mean_ranks[b])
            # Nemenyi: z = ΔR / se, p = P(studentized range of k > z √2) at infinite dof.
            expected = stats.studentized_range.sf(gap / se * math.sqrt(2), k, math.inf)
            assert result.nemenyi_p[i][j] == pytest.approx(expected, abs=1e-6)
            assert (result.nemenyi_p[i][j] < 0.05) == (gap > result.cd)
    assert any(p < 0.05 for row in result.nemenyi_p for p in row)  # m1 vs m5


def test_friedman_needs_two_datasets_and_three_complete_methods(tmp_path: Path) -> None:
    one = friedman(_rows({"a": [1.0], "b": [2.0], "c": [3.0]}, ["d1"]))
    assert one == "the Friedman test needs two or more datasets; this report has one."
    two = friedman(_rows({"a": [1.0, 2.0], "b": [2.0, 1.0]}, ["d1", "d2"]))
    assert isinstance(two, str) and "three or more methods" in two and "2 (a, b)" in two
    partial = {"dataset": "d1", "method": "partial", "seed": 0, "final_top1": 99.0}
    rows = [*_rows(TABLE, DATASETS), partial]
    result = friedman(rows)
    assert not isinstance(result, str)
    assert result.left_out == ("partial",) and result.methods == ("a", "b", "c")
    text = friedman_markdown(result, method_labels={"a": "Method A"})
    assert "| Method A | 1.25 | 1 | 2 | 1 | 1 |" in text and "χ²_F = 4.50" in text
    assert "Not ranked (not run on every dataset, or not finite there): partial." in text
    assert "No Friedman test: the Friedman test needs two" in friedman_markdown(one)
    path = cd_diagram(result, tmp_path / "cd_diagram.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_tie_everywhere_or_a_non_finite_cell_is_no_significance() -> None:
    """scipy's χ² is NaN when every method ties on every dataset: that is no test, not the
    Iman–Davenport F = inf, p = 0 of perfect agreement. A NaN run leaves its method out."""
    tied = friedman(_rows({"a": [10.0, 0.5], "b": [10.0, 0.5], "c": [10.0, 0.5]}, ["d1", "d2"]))
    assert isinstance(tied, str) and "every method scores the same" in tied
    rows = _rows({**TABLE, "nan": [50.0, math.nan, 50.0, 50.0]}, DATASETS)
    result = friedman(rows)
    assert not isinstance(result, str)
    assert result.methods == ("a", "b", "c") and result.left_out == ("nan",)
    assert result == dataclasses.replace(friedman(_rows(TABLE, DATASETS)), left_out=("nan",))
    assert math.isfinite(result.chi2) and 0 < result.iman_davenport_p < 1


def test_missing_libraries_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from carrot.bench.stats import holm
    from carrot.integrations.statsmodels import paired_t_effect_for_power

    monkeypatch.setitem(sys.modules, "statsmodels.stats.multitest", None)
    monkeypatch.setitem(sys.modules, "statsmodels.stats.power", None)
    monkeypatch.setitem(sys.modules, "scikit_posthocs", None)
    with pytest.raises(ImportError, match=r"need statsmodels.*carrot-fgvc\[bench\]"):
        holm([0.1, 0.2])
    with pytest.raises(ImportError, match=r"need statsmodels.*carrot-fgvc\[bench\]"):
        paired_t_effect_for_power(5, alpha=0.05, power=0.8)
    with pytest.raises(ImportError, match=r"need scikit-posthocs.*carrot-fgvc\[bench\]"):
        friedman(_rows(TABLE, DATASETS))
