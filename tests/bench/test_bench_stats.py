"""Paired statistics and the accuracy report, checked against hand computations."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from carrot.bench.accuracy import analyze, markdown
from carrot.bench.stats import paired_comparison


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
    flat = paired_comparison([2.0, 3.0], [1.0, 2.0])  # identical differences: no variance
    assert (
        flat.ci_low == flat.ci_high == 1.0 and math.isnan(flat.p_value) and not flat.significant()
    )
    ties = paired_comparison([1.0, 2.0], [1.0, 3.0])
    assert (ties.wins, ties.ties) == (0, 1)
    with pytest.raises(ValueError, match="paired results need equal lengths"):
        paired_comparison([1.0], [1.0, 2.0])


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
    comps = {(c.method, c.metric): c for c in analyze(rows)}
    carrot = comps[("carrot_l1", "final_top1")]
    assert carrot.baseline == "ce" and carrot.seeds == [0, 2] and carrot.stats.diff == -1.0
    assert comps[("supcon_carrot", "final_top1")].baseline == "supcon"
    assert comps[("supcon_carrot", "final_top1")].stats.diff == pytest.approx(2.0)
    table = markdown(rows, analyze(rows))
    assert "(baseline)" in table and "-1.00 [" in table and "vs supcon" in table
