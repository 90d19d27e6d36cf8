"""statsmodels for the bench's statistics: Holm's step-down adjustment, the paired TOST equivalence
test and the power of the paired t-test (``pip install 'carrot-fgvc[bench]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

__all__ = ["holm_adjusted", "paired_t_effect_for_power", "paired_t_power", "paired_tost_p"]

_EXTRA = "pip install 'carrot-fgvc[bench]'"


def _import(module: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            "carrot's bench statistics need statsmodels, which is not installed; install it "
            f"with: {_EXTRA}"
        ) from err


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """``multipletests(p_values, method="holm")``'s adjusted p-values (no NaN allowed)."""
    import gc

    multitest = _import("statsmodels.stats.multitest")
    # statsmodels' Holm branch calls gc.collect(), which walks every object of the process (0.8 s
    # with torch loaded); frozen objects are skipped, so the collection sees only new ones.
    gc.freeze()
    try:
        adjusted = multitest.multipletests(list(p_values), method="holm")[1]
    finally:
        gc.unfreeze()
    return [float(p) for p in adjusted]


def paired_t_effect_for_power(n: int, *, alpha: float, power: float) -> float:
    """The effect size d_z at which the two-sided paired (one-sample) t-test with ``n`` pairs has
    ``power``: ``TTestPower().solve_power`` for the effect size."""
    stats_power = _import("statsmodels.stats.power")
    d = stats_power.TTestPower().solve_power(
        effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"
    )
    return float(d)


def paired_tost_p(method: Sequence[float], baseline: Sequence[float], *, margin: float) -> float:
    """``ttost_paired(method, baseline, -margin, margin)``'s p-value: the larger of the two
    one-sided paired t-tests of H₀ mean(method − baseline) ≤ −margin and H₀ mean ≥ +margin."""
    import numpy as np

    weightstats = _import("statsmodels.stats.weightstats")
    p, _, _ = weightstats.ttost_paired(
        np.asarray(method, dtype=np.float64),
        np.asarray(baseline, dtype=np.float64),
        -margin,
        margin,
    )
    return float(p)


def paired_t_power(effect: float, n: int, *, alpha: float) -> float:
    """Power of the two-sided paired (one-sample) t-test with ``n`` pairs at effect size d_z =
    ``effect``: ``TTestPower().power``."""
    stats_power = _import("statsmodels.stats.power")
    return float(
        stats_power.TTestPower().power(
            effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided"
        )
    )
