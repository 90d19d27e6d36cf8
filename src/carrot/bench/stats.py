"""Paired-seed statistics: mean difference, 95% confidence intervals (t and bootstrap), wins,
paired t-test and Wilcoxon signed-rank test, the paired TOST equivalence test, the paired effect
size, the smallest difference the seeds could detect, and Holm's adjustment of a family of p-values
(statsmodels)."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ALPHA",
    "EQUIVALENCE_MARGIN",
    "PairedComparison",
    "bootstrap_interval",
    "check_margin",
    "detectable_effect",
    "holm",
    "min_detectable_difference",
    "paired_comparison",
    "wilcoxon_p",
]

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
ALPHA = 0.05
"""Two-sided significance level of every test and of the power calculation."""
POWER = 0.8
"""Power at which the minimum detectable difference is computed."""
EQUIVALENCE_MARGIN = 0.5
"""Default margin δ of practical equivalence, in points of accuracy (percent): the TOST tests
whether the true mean difference lies within ±δ, and the Bayesian comparison's rope is ±δ. Half a
point of top-1 is below what FGVC papers claim as a gain; with the 0.3 to 1.2 points sd of the
paired differences on the bench's datasets, it takes 5 to 51 seeds to show (80% power), and
±0.25 would take 14 to 199."""


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
    sd_diff: float = math.nan
    """Standard deviation of the paired differences (n − 1 in the denominator); NaN for n < 2."""
    effect_size: float = math.nan
    """Cohen's d_z, the paired effect size: mean difference / sd of the differences (the
    standardized mean difference of the paired t-test); NaN for n < 2 or when sd = 0."""
    mdd: float = math.nan
    """Minimum detectable difference: the true mean difference the two-sided paired t-test at
    α = 0.05 would find with 80% power with these n seeds, ``detectable_effect(n) · sd_diff``
    (in the metric's units, with the observed sd as the noise); NaN for n < 2."""
    tost_p: float = math.nan
    """p-value of the paired TOST (two one-sided t-tests, statsmodels' ``ttost_paired``) of
    equivalence within ±margin: small when the mean difference is surely inside ±margin; NaN for
    n < 2, when every difference is equal, or without a margin."""

    def significant(self, alpha: float = ALPHA) -> bool:
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
    """Percentile interval of the mean of ``diffs``: ``scipy.stats.bootstrap`` of the paired
    differences (one sample, ``method="percentile"``), ``resamples`` resamples drawn from numpy's
    PCG64 seeded with ``seed`` so the interval is reproducible. NaN for n < 2."""
    import numpy as np
    from scipy import stats

    if len(diffs) < 2:
        return math.nan, math.nan
    result = stats.bootstrap(
        (np.asarray(diffs, dtype=np.float64),),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        # ``random_state`` rather than ``rng`` (scipy >= 1.15) for the declared scipy >= 1.9.
        random_state=np.random.default_rng(seed),
        vectorized=True,
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


@functools.lru_cache(maxsize=64)
def detectable_effect(n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The paired effect size d_z that a two-sided paired t-test at ``alpha`` detects with
    probability ``power`` with ``n`` pairs: statsmodels' ``TTestPower`` (the one-sample t-test of
    the differences, n − 1 degrees of freedom, noncentrality d_z · √n) solved for the effect size.
    NaN for n < 2."""
    if n < 2:
        return math.nan
    from carrot.integrations.statsmodels import paired_t_effect_for_power

    return paired_t_effect_for_power(n, alpha=alpha, power=power)


def min_detectable_difference(
    n: int, sd_diff: float, *, alpha: float = ALPHA, power: float = POWER
) -> float:
    """``detectable_effect(n) · sd_diff``: the smallest true mean difference (metric units) that the
    paired t-test finds with probability ``power``, if the differences' sd is ``sd_diff``."""
    if n < 2 or math.isnan(sd_diff):
        return math.nan
    return detectable_effect(n, alpha=alpha, power=power) * sd_diff


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (``statsmodels.stats.multitest.
    multipletests(method="holm")``): with the m p-values sorted, p₍ᵢ₎ becomes
    max_{j ≤ i} min(1, (m − j + 1) p₍ⱼ₎). NaN entries (no test: n < 2 or no variance) are not part
    of the family and stay NaN."""
    kept = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    out = [math.nan] * len(p_values)
    if kept:
        from carrot.integrations.statsmodels import holm_adjusted

        adjusted = holm_adjusted([p_values[i] for i in kept])
        for i, p in zip(kept, adjusted, strict=True):
            out[i] = p
    return out


def check_margin(margin: float, name: str = "margin") -> float:
    """``margin`` if it is a finite number > 0 (an equivalence margin or a planned effect)."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(
            f"{name} must be a finite number > 0 (points of accuracy), got {margin!r}."
        )
    return float(margin)


def paired_comparison(
    method: Sequence[float], baseline: Sequence[float], *, margin: float | None = None
) -> PairedComparison:
    """Compare two equally long lists of per-seed results; index i of both is the same seed.
    With ``margin``, also the TOST p-value of equivalence within ±margin (same units)."""
    if margin is not None:
        check_margin(margin)
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
    ci_low = ci_high = p = sd = effect = tost = math.nan
    if n >= 2:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        # Equal differences (e.g. one test image on every seed) leave only round-off in the sd,
        # which would give a t statistic of 1e13 and a p of 1e-28: the t-test is undefined there.
        scale = max((abs(v) for v in (*method, *baseline)), default=1.0)
        if sd <= 1e-9 * max(1.0, scale):
            sd = 0.0
        effect = mean / sd if sd > 0 else math.nan
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        ci_low, ci_high = mean - half, mean + half
        if sd > 0:
            p = float(stats.ttest_rel(method, baseline).pvalue)
            if margin is not None:
                from carrot.integrations.statsmodels import paired_tost_p

                tost = paired_tost_p(method, baseline, margin=margin)
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
        sd_diff=sd,
        effect_size=effect,
        mdd=min_detectable_difference(n, sd),
        tost_p=tost,
    )
