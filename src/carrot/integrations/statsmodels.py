"""statsmodels for the bench's statistics: Holm's step-down adjustment and the power of the paired
t-test (``pip install 'carrot-fgvc[bench]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

__all__ = ["holm_adjusted", "paired_t_effect_for_power"]

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
    multitest = _import("statsmodels.stats.multitest")
    return [float(p) for p in multitest.multipletests(list(p_values), method="holm")[1]]


def paired_t_effect_for_power(n: int, *, alpha: float, power: float) -> float:
    """The effect size d_z at which the two-sided paired (one-sample) t-test with ``n`` pairs has
    ``power``: ``TTestPower().solve_power`` for the effect size."""
    stats_power = _import("statsmodels.stats.power")
    d = stats_power.TTestPower().solve_power(
        effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"
    )
    return float(d)
