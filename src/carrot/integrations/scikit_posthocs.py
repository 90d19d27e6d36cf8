"""scikit-posthocs for the bench's ranks across datasets: the Nemenyi test after Friedman and the
critical-difference diagram (``pip install 'carrot-fgvc[bench]'``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["draw_cd_diagram", "nemenyi_friedman"]

_EXTRA = "pip install 'carrot-fgvc[bench]'"


def _import() -> tuple[ModuleType, ModuleType]:
    try:
        import pandas as pd
        import scikit_posthocs as sp
    except ImportError as err:
        raise ImportError(
            "carrot's ranks across datasets need scikit-posthocs, which is not installed; install "
            f"it with: {_EXTRA}"
        ) from err
    return sp, pd


def nemenyi_friedman(
    scores: Sequence[Sequence[float]], methods: Sequence[str]
) -> list[list[float]]:
    """Pairwise Nemenyi p-values of ``methods`` over the blocks (datasets) of ``scores``.

    Args:
        scores: One row per dataset, one column per method. Shape: (N, k).
        methods: The column names. Shape: (k,).

    Returns:
        The symmetric matrix of p-values, in ``methods``' order. Shape: (k, k).
    """
    sp, pd = _import()
    table = sp.posthoc_nemenyi_friedman(
        pd.DataFrame([list(r) for r in scores], columns=list(methods))
    )
    return [[float(table.loc[a, b]) for b in methods] for a in methods]


def draw_cd_diagram(
    ax: Any,
    mean_ranks: Mapping[str, float],
    p_values: Sequence[Sequence[float]],
    *,
    cd: float,
    alpha: float,
) -> None:
    """``critical_difference_diagram`` on ``ax``: the mean ranks, a bar joining the methods whose
    Nemenyi p-value is at least ``alpha``, and the critical difference ``cd`` above the axis."""
    sp, pd = _import()
    names = list(mean_ranks)
    sig = pd.DataFrame([list(r) for r in p_values], index=names, columns=names)
    sp.critical_difference_diagram(pd.Series(dict(mean_ranks)), sig, cd=cd, alpha=alpha, ax=ax)
