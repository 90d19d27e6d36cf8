"""Paired statistics and the accuracy report, checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from carrot.bench.report import analyze, comparison_rows, markdown
from carrot.bench.stats import (
    bootstrap_interval,
    detectable_effect,
    holm,
    min_detectable_difference,
    paired_comparison,
    wilcoxon_p,
)


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
    # The same difference on every seed, as accuracies in percent carry it (round-off only):
    # measured in the study, 48.47 - 48.37 style differences gave p = 1e-28 before.
    base = [48.37, 46.9, 49.83]
    fuzzy = paired_comparison([b + 0.1 for b in base], base)
    assert fuzzy.sd_diff == 0.0 and math.isnan(fuzzy.p_value) and not fuzzy.significant()
    assert math.isnan(fuzzy.effect_size) and fuzzy.mdd == 0.0
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


def test_bootstrap_interval_is_scipys_percentile_bootstrap_of_the_differences() -> None:
    rng = np.random.default_rng(7)
    for n in (2, 5, 17):
        diffs = rng.normal(0.4, 1.0, size=n)
        for confidence, seed in ((0.95, 0), (0.9, 3)):
            direct = stats.bootstrap(
                (diffs,), np.mean, n_resamples=2000, confidence_level=confidence,
                method="percentile", random_state=np.random.default_rng(seed),
            ).confidence_interval  # fmt: skip
            ours = bootstrap_interval(list(diffs), confidence=confidence, resamples=2000, seed=seed)
            assert ours == (float(direct.low), float(direct.high))


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
        "sd_diff", "effect_size", "mdd", "tost_p", "holm_p", "holm_family", "margin", "tost_holm_p",
        "verdict", "seeds_to_detect", "seeds_for_equivalence", "seeds",
    ]  # fmt: skip
    assert first["seeds"] == "0 1 2" and first["wins"] == 3


def _power(d: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at effect size d_z with n pairs, from the noncentral t:
    P(|T| > t_crit) with T ~ t'(n − 1, d_z √n)."""
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = d * math.sqrt(n)
    return float(stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc))


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_detectable_effect_has_80_percent_power(n: int) -> None:
    d = detectable_effect(n)
    assert _power(d, n) == pytest.approx(0.8, abs=1e-4)
    if n > 2:  # scipy's noncentral t is NaN far in the tail at 1 degree of freedom
        assert _power(0.9 * d, n) < 0.8 < _power(1.1 * d, n)
    assert math.isnan(detectable_effect(1))


def test_effect_size_and_mdd_by_hand() -> None:
    # Differences 1, 2, 3: mean 2, sd 1, so d_z = 2 and MDD = d*(3) · 1.
    c = paired_comparison([11.0, 22.0, 33.0], [10.0, 20.0, 30.0])
    assert c.sd_diff == pytest.approx(1.0) and c.effect_size == pytest.approx(2.0)
    assert c.mdd == pytest.approx(detectable_effect(3))
    # Differences 0.5, -0.5, 1.5, 0.5, 0.5 (n = 5): mean 0.5, sd sqrt(0.5); G*Power's tables give
    # d = 1.68 for a paired t-test with 5 pairs at α = 0.05, power 0.8.
    diffs = [0.5, -0.5, 1.5, 0.5, 0.5]
    c = paired_comparison([d + 70.0 for d in diffs], [70.0] * 5)
    sd = math.sqrt(sum((d - 0.5) ** 2 for d in diffs) / 4)
    assert c.effect_size == pytest.approx(0.5 / sd)
    assert c.mdd == pytest.approx(detectable_effect(5) * sd)
    assert detectable_effect(5) == pytest.approx(1.68, abs=0.005)
    assert min_detectable_difference(5, 2.0) == pytest.approx(2 * detectable_effect(5))
    flat = paired_comparison([2.0, 3.0], [1.0, 2.0])  # no variance: no effect size, MDD 0
    assert math.isnan(flat.effect_size) and flat.mdd == 0.0 and flat.sd_diff == 0.0
    one = paired_comparison([1.0], [0.0])
    assert math.isnan(one.effect_size) and math.isnan(one.mdd) and math.isnan(one.sd_diff)


def _holm_by_hand(ps: list[float]) -> list[float]:
    """Holm (1979): sort the m p-values; the i-th smallest (i from 0) becomes
    max over j <= i of min(1, (m − j) p_(j))."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out = [0.0] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.03, 0.04, 0.20 (m = 4): 4·0.01 = 0.04, 3·0.03 = 0.09, max(0.09, 2·0.04) = 0.09,
    # max(0.09, 1·0.20) = 0.20. NaN (no test) is not in the family.
    got = holm([0.01, 0.04, 0.03, 0.20, math.nan])
    assert got[:4] == pytest.approx([0.04, 0.09, 0.09, 0.20]) and math.isnan(got[4])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    assert holm([]) == [] and math.isnan(holm([math.nan])[0])
    ps = [0.001, 0.2, 0.013, 0.04, 0.0049, 0.7, 0.02]
    assert holm(ps) == pytest.approx(_holm_by_hand(ps))


def _family_rows() -> list[dict]:
    # Two datasets; on each, "a" is 1 point above ce with small noise (significant alone) and "b"
    # noisy around 0. Seeds pair the rows.
    noise = [0.1, -0.2, 0.15, -0.05, 0.0]
    rows = []
    for d, shift in (("d1", 0.0), ("d2", 5.0)):
        for s in range(5):
            rows.append(_row(d, "ce", s, 50.0 + shift + s))
            rows.append(_row(d, "a", s, 51.0 + shift + s + noise[s]))
            rows.append(_row(d, "b", s, 50.0 + shift + s + (-1) ** s * (0.5 + noise[s])))
    return rows


def test_analyze_holm_over_the_family_it_names() -> None:
    rows = _family_rows()
    baselines = {"a": "ce", "b": "ce"}
    comps = analyze(rows, baselines)
    for metric in ("final_top1", "best_top1", "final_mean_class_acc"):
        family = [c for c in comps if c.metric == metric]
        assert len(family) == 4  # 2 methods × 2 datasets, one family per metric
        expected = _holm_by_hand([c.stats.p_value for c in family])
        assert [c.holm_p for c in family] == pytest.approx(expected)
        assert {c.family for c in family} == {f"{metric} on all datasets (4 tests)"}
    per = analyze(rows, baselines, family="dataset")
    for d in ("d1", "d2"):
        family = [c for c in per if c.metric == "final_top1" and c.dataset == d]
        assert [c.holm_p for c in family] == pytest.approx(
            _holm_by_hand([c.stats.p_value for c in family])
        )
        assert family[0].family == f"final_top1 on dataset {d} (2 tests)"
    with pytest.raises(ValueError, match="family must be 'all' or 'dataset', got 'seed'"):
        analyze(rows, baselines, family="seed")  # type: ignore[arg-type]
    csv_rows = comparison_rows(comps)
    assert [r["holm_p"] for r in csv_rows] == [c.holm_p for c in comps]


def test_markdown_marks_significance_by_the_adjusted_p() -> None:
    # Raw p < 0.05 for "a" on both datasets, but only the one with Holm p < 0.05 is bold.
    rows = [_row("d", "ce", s, 50.0 + s) for s in range(5)]
    rows += [_row("d", "a", s, 50.0 + s + x) for s, x in enumerate([0.5, 0.1, 0.7, 0.1, 0.6])]
    rows += [_row("d", "b", s, 50.0 + s + x) for s, x in enumerate([2.0, 2.1, 1.9, 2.0, 2.2])]
    rows += [_row("d", "c", s, 50.0 + s + x) for s, x in enumerate([0.5, -0.4, 0.3, -0.2, 0.1])]
    comps = analyze(rows, {"a": "ce", "b": "ce", "c": "ce"})
    final = {c.method: c for c in comps if c.metric == "final_top1"}
    assert final["a"].stats.p_value < 0.05 <= final["a"].holm_p
    assert final["b"].holm_p < 0.05
    table = markdown(rows, comps)
    line = {m: next(x for x in table.splitlines() if x.startswith(f"| {m} |")) for m in "abc"}
    assert "| **+2.04 [" in line["b"] and "**" not in line["a"] and "**" not in line["c"]
    assert f"| {final['b'].stats.effect_size:.2f} | {final['b'].stats.mdd:.2f} |" in line["b"]
