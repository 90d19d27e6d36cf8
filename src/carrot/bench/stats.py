"""Paired-seed statistics: mean difference, 95% confidence intervals (t and bootstrap), wins,
paired t-test and Wilcoxon signed-rank test."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedComparison", "bootstrap_interval", "paired_comparison", "wilcoxon_p"]

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


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
    wilcoxon_p: float
    """Two-sided Wilcoxon signed-rank test of the differences (exact for small n, zero differences
    dropped); NaN for n < 2 or when every difference is 0. With 5 seeds its smallest possible
    value is 2/2⁵ = 0.0625."""
    boot_low: float
    boot_high: float
    """Percentile 95% interval of the mean difference from a seeded bootstrap of the paired
    differences (10,000 resamples); NaN for n < 2."""

    def significant(self, alpha: float = 0.05) -> bool:
        return not math.isnan(self.p_value) and self.p_value < alpha


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test that the differences are centred on 0.

    Zero differences are dropped (Wilcoxon's convention); the null distribution is exact when no
    two absolute differences tie and n is small, else scipy's normal approximation.
    """
    from scipy import stats

    nonzero = [d for d in diffs if d != 0]
    if len(diffs) < 2 or not nonzero:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "exact p-value unavailable with ties/zeros"
        return float(stats.wilcoxon(nonzero).pvalue)


def bootstrap_interval(
    diffs: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs``: resample the n differences with replacement
    ``resamples`` times (numpy's PCG64 seeded with ``seed``, so the interval is reproducible) and
    take the (1 ± confidence)/2 quantiles of the resampled means. NaN for n < 2."""
    import numpy as np

    if len(diffs) < 2:
        return math.nan, math.nan
    d = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)  # (resamples,)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


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
    boot_low, boot_high = bootstrap_interval(diffs)
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
        wilcoxon_p=wilcoxon_p(diffs),
        boot_low=boot_low,
        boot_high=boot_high,
    )
