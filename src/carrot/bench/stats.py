"""Paired-seed statistics: mean difference, 95% confidence interval, wins, paired t-test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedComparison", "paired_comparison"]


@dataclass(frozen=True)
class PairedComparison:
    n: int
    baseline_mean: float
    method_mean: float
    diff: float
    """Mean of method − baseline over paired seeds."""
    ci_low: float
    ci_high: float
    """95% confidence interval of the mean difference (t distribution, n − 1 dof); NaN for n < 2."""
    wins: int
    ties: int
    p_value: float
    """Two-sided paired t-test; NaN for n < 2 or when every difference is equal."""

    def significant(self, alpha: float = 0.05) -> bool:
        return not math.isnan(self.p_value) and self.p_value < alpha


def paired_comparison(method: Sequence[float], baseline: Sequence[float]) -> PairedComparison:
    """Compare two equally long lists of per-seed results; index i of both is the same seed."""
    if len(method) != len(baseline):
        raise ValueError(
            f"paired results need equal lengths, got {len(method)} and {len(baseline)}."
        )
    from scipy import stats

    n = len(method)
    diffs = [m - b for m, b in zip(method, baseline, strict=True)]
    mean = sum(diffs) / n if n else math.nan
    wins = sum(d > 0 for d in diffs)
    ties = sum(d == 0 for d in diffs)
    ci_low = ci_high = p = math.nan
    if n >= 2:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        ci_low, ci_high = mean - half, mean + half
        if sd > 0:
            p = float(stats.ttest_rel(method, baseline).pvalue)
    return PairedComparison(
        n=n,
        baseline_mean=sum(baseline) / n if n else math.nan,
        method_mean=sum(method) / n if n else math.nan,
        diff=mean,
        ci_low=ci_low,
        ci_high=ci_high,
        wins=wins,
        ties=ties,
        p_value=p,
    )
