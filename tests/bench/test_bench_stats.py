"""Paired statistics and the accuracy report, checked against hand computations."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from carrot.bench.report import analyze, comparison_rows, markdown
from carrot.bench.stats import bootstrap_interval, paired_comparison, wilcoxon_p


def test_paired_comparison_by_hand() -> None:
    baseline = [10.0, 20.0, 30.0]
    method = [11.0, 22.0, 33.0]  # differences 1, 2, 3: mean 2, sd 1
    c = paired_comparison(method, baseline)
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert (c.n, c.diff, c.wins, c.ties) == (3, 2.0, 3, 0)
    assert c.ci_low == pytest.approx(2 - half) and c.ci_high == pytest.approx(2 + half)
    assert c.p_value == pytest.approx(stats.ttest_1samp([1.0, 2.0, 3.0], 0.0).pvalue)
    assert c.baseline_mean == 20.0 and c.method_mean == 22.0
    assert not c.significant() and c.significant(alpha=0.1)  # p = 0.074


def test_paired_comparison_degenerate_cases() -> None:
    one = paired_comparison([1.0], [0.0])
    assert one.diff == 1.0 and math.isnan(one.ci_low) and math.isnan(one.p_value)
    assert math.isnan(one.wilcoxon_p) and math.isnan(one.boot_low) and math.isnan(one.boot_high)
    flat = paired_comparison([2.0, 3.0], [1.0, 2.0])  # identical differences: no variance
    assert (
        flat.ci_low == flat.ci_high == 1.0 and math.isnan(flat.p_value) and not flat.significant()
    )
    assert flat.boot_low == flat.boot_high == 1.0 and flat.wilcoxon_p == 0.5  # 2 of 2 positive
    zero = paired_comparison([1.0, 2.0], [1.0, 2.0])
    assert math.isnan(zero.wilcoxon_p) and zero.boot_low == zero.boot_high == 0.0
    ties = paired_comparison([1.0, 2.0], [1.0, 3.0])
    assert (ties.wins, ties.ties) == (0, 1)
    with pytest.raises(ValueError, match="paired results need equal lengths"):
        paired_comparison([1.0], [1.0, 2.0])


def test_wilcoxon_exact_by_hand() -> None:
    # n = 5, no ties: the signed-rank statistic's null distribution is the 2^5 sign patterns.
    # All five positive: W- = 0, reached by 1 pattern of 32 on each side: p = 2/32.
    assert wilcoxon_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32)
    # Rank 2 negative: W- = 2; patterns with W- <= 2: {}, {1}, {2}: p = 2 * 3/32.
    assert wilcoxon_p([1.0, -2.0, 3.0, 4.0, 5.0]) == pytest.approx(6 / 32)
    # Zero differences are dropped (Wilcoxon's convention): the same as the four nonzero ones.
    assert wilcoxon_p([0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 / 16)
    assert math.isnan(wilcoxon_p([0.0, 0.0])) and math.isnan(wilcoxon_p([3.0]))


def test_bootstrap_interval_against_the_exact_bootstrap_distribution() -> None:
    # Means of 3 draws from {1, 2, 3}: sums 3..9 with counts 1, 3, 6, 7, 6, 3, 1 of 27, so the
    # smallest and largest means each have probability 1/27 = 3.7% > 2.5%: the interval is [1, 3].
    assert bootstrap_interval([1.0, 2.0, 3.0]) == (1.0, 3.0)
    # Two values: means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    # Ten values 0..9: the bootstrap sd of the mean is sqrt(8.25 / 10) = 0.908, and the percentile
    # interval is close to the normal one, 4.5 ± 1.96 · 0.908.
    low, high = bootstrap_interval([float(i) for i in range(10)])
    half = 1.96 * math.sqrt(8.25 / 10)
    assert low == pytest.approx(4.5 - half, abs=0.1) and high == pytest.approx(4.5 + half, abs=0.1)
    # Seeded: the same interval every time; another seed, another (close) one.
    irregular = [0.3, -1.2, 2.5, 0.7, 1.9, -0.4, 3.3, 0.05]
    assert bootstrap_interval(irregular) == bootstrap_interval(irregular)
    assert bootstrap_interval(irregular, seed=1) != bootstrap_interval(irregular)


def _row(dataset: str, method: str, seed: int, top1: float) -> dict:
    return {
        "dataset": dataset, "method": method, "seed": seed, "final_top1": top1, "best_top1": top1 + 1,
        "final_mean_class_acc": top1, "final_gamma_mean": 1.5, "max_gamma": 3.0, "final_r_mean": 0.2,
    }  # fmt: skip


def test_analyze_pairs_by_seed_and_baseline() -> None:
    rows = [_row("d", "ce", s, 50.0 + s) for s in range(3)]
    rows += [_row("d", "carrot_l1", s, 49.0 + s) for s in (0, 2)]  # seed 1 missing
    rows += [_row("d", "supcon", s, 40.0) for s in range(3)]
    rows += [_row("d", "supcon_carrot", s, 41.0 + s) for s in range(3)]
    baselines = {"ce": None, "carrot_l1": "ce", "supcon": "ce", "supcon_carrot": "supcon"}
    comps = {(c.method, c.metric): c for c in analyze(rows, baselines)}
    carrot = comps[("carrot_l1", "final_top1")]
    assert carrot.baseline == "ce" and carrot.seeds == [0, 2] and carrot.stats.diff == -1.0
    assert comps[("supcon_carrot", "final_top1")].baseline == "supcon"
    assert comps[("supcon_carrot", "final_top1")].stats.diff == pytest.approx(2.0)
    table = markdown(rows, analyze(rows, baselines), method_labels={"carrot_l1": "CARROT λ=1"})
    assert "(baseline)" in table and "-1.00 [" in table and "vs supcon" in table
    assert "| CARROT λ=1 | 2 |" in table and "r/m median" in table


def test_comparisons_csv_columns() -> None:
    rows = [_row("d", "ce", s, 50.0 + s) for s in range(3)]
    rows += [_row("d", "carrot", s, 51.0 + s * 1.1) for s in range(3)]
    (first, *_) = comparison_rows(analyze(rows, {"carrot": "ce"}))
    assert list(first) == [
        "dataset", "method", "baseline", "metric", "n", "baseline_mean", "method_mean", "diff",
        "ci_low", "ci_high", "wins", "ties", "p_value", "wilcoxon_p", "boot_low", "boot_high",
        "seeds",
    ]  # fmt: skip
    assert first["seeds"] == "0 1 2" and first["wins"] == 3
