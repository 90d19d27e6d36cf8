"""Methods ranked across datasets (Demšar 2006): the Friedman test, the Iman–Davenport F, the
Nemenyi post-hoc test with its critical difference, and the critical-difference diagram.

The table is methods × datasets of one metric, each cell the mean over the seeds of that dataset;
only methods run on every dataset of the report take part (a complete block design). Rank 1 is the
best (highest) value on a dataset; ties share the mean of their ranks. The Friedman statistic is
scipy's, the Nemenyi p-values and the diagram scikit-posthocs'; the critical difference is
Demšar's CD = q_α · sqrt(k (k + 1) / (6 N)) with q_α the studentized range quantile / √2.
scikit-posthocs rather than autorank: autorank refuses tables with fewer than five datasets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carrot.bench.stats import ALPHA
from carrot.tables import md_cell

__all__ = ["Friedman", "cd_diagram", "critical_difference", "friedman", "friedman_markdown"]


@dataclass(frozen=True)
class Friedman:
    metric: str
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    scores: tuple[tuple[float, ...], ...]
    """Mean over seeds per dataset (row) and method (column). Shape: (N, k)."""
    ranks: tuple[tuple[float, ...], ...]
    """Rank of each method on each dataset, 1 = best. Shape: (N, k)."""
    mean_ranks: Mapping[str, float]
    chi2: float
    """Friedman's χ²_F (scipy, with its correction for tied ranks), k − 1 degrees of freedom."""
    p_value: float
    iman_davenport: float
    """F_F = (N − 1) χ²_F / (N (k − 1) − χ²_F), F distribution with k − 1 and (k − 1)(N − 1)
    degrees of freedom (Demšar's recommendation: χ²_F is too conservative)."""
    iman_davenport_p: float
    cd: float
    """Nemenyi critical difference of mean ranks at ``alpha``."""
    nemenyi_p: tuple[tuple[float, ...], ...]
    """Pairwise Nemenyi p-values (scikit-posthocs). Shape: (k, k)."""
    alpha: float
    left_out: tuple[str, ...]
    """Methods not run on every dataset (or without a finite score on one), so not ranked."""


def critical_difference(k: int, n: int, *, alpha: float = ALPHA) -> float:
    """Demšar's Nemenyi critical difference for ``k`` methods on ``n`` datasets:
    q_α · sqrt(k (k + 1) / (6 n)), q_α the upper-α studentized range quantile (k groups, infinite
    degrees of freedom) divided by √2 (his Table 5a: 1.960, 2.343, 2.569, ... for k = 2, 3, 4)."""
    from scipy.stats import studentized_range

    q = float(studentized_range.ppf(1 - alpha, k, math.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6 * n))


def friedman(
    rows: Sequence[Mapping[str, Any]], *, metric: str = "final_top1", alpha: float = ALPHA
) -> Friedman | str:
    """The Friedman test over the methods run on every dataset of ``rows`` (one row per run: its
    dataset, method, seed and ``metric``). Returns why not instead when there are fewer than two
    datasets or three such methods, or when every method scores the same on every dataset. A
    method whose mean ``metric`` is not finite on some dataset is left out, as one not run there
    is."""
    import numpy as np
    from scipy import stats

    from carrot.integrations.scikit_posthocs import nemenyi_friedman

    datasets = tuple(dict.fromkeys(str(r["dataset"]) for r in rows))
    every = tuple(dict.fromkeys(str(r["method"]) for r in rows))
    on = {d: {str(r["method"]) for r in rows if r["dataset"] == d} for d in datasets}

    def cell(d: str, m: str) -> float:
        runs = [float(r[metric]) for r in rows if (r["dataset"], r["method"]) == (d, m)]
        return float(np.mean(runs))

    methods = tuple(
        m for m in every if all(m in on[d] and math.isfinite(cell(d, m)) for d in datasets)
    )
    left_out = tuple(m for m in every if m not in methods)
    if len(datasets) < 2:
        return "the Friedman test needs two or more datasets; this report has one."
    if len(methods) < 3:
        return (
            "the Friedman test needs three or more methods run on every dataset; this report has "
            f"{len(methods)} ({', '.join(methods) or 'none'})."
        )
    scores = np.array([[cell(d, m) for m in methods] for d in datasets])  # (N, k)
    ranks = np.vstack([stats.rankdata(-row) for row in scores])  # (N, k), 1 = best
    n, k = scores.shape
    chi2, p = stats.friedmanchisquare(*scores.T)
    chi2, p = float(chi2), float(p)
    if math.isnan(chi2):  # scipy's tie correction divides by zero
        return (
            "the Friedman test has nothing to rank: every method scores the same on every dataset."
        )
    denominator = n * (k - 1) - chi2
    if denominator > 0:
        ff = (n - 1) * chi2 / denominator
        ff_p = float(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))
    else:  # every dataset ranks the methods the same way
        ff, ff_p = math.inf, 0.0
    return Friedman(
        metric=metric,
        datasets=datasets,
        methods=methods,
        scores=tuple(tuple(map(float, row)) for row in scores),
        ranks=tuple(tuple(map(float, row)) for row in ranks),
        mean_ranks={m: float(ranks[:, j].mean()) for j, m in enumerate(methods)},
        chi2=chi2,
        p_value=p,
        iman_davenport=float(ff),
        iman_davenport_p=ff_p,
        cd=critical_difference(k, n, alpha=alpha),
        nemenyi_p=tuple(tuple(row) for row in nemenyi_friedman(scores.tolist(), methods)),
        alpha=alpha,
        left_out=left_out,
    )


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def friedman_markdown(
    result: Friedman | str, *, method_labels: Mapping[str, str] | None = None
) -> str:
    """The ranks table (methods by mean rank) and the test's line, or the reason there is none."""
    if isinstance(result, str):
        return f"### Ranks across datasets\n\nNo Friedman test: {result}\n"
    labels = method_labels or {}
    order = sorted(result.methods, key=lambda m: result.mean_ranks[m])
    n, k = len(result.datasets), len(result.methods)
    head = "| method | mean rank | " + " | ".join(f"`{d}`" for d in result.datasets) + " |"
    lines = [
        "### Ranks across datasets (Friedman, Nemenyi)\n",
        f"Ranks of the mean {result.metric} over seeds on each dataset (1 = best; ties share the "
        f"mean rank), {k} methods on {n} datasets. Friedman χ²_F = {result.chi2:.2f} "
        f"({k - 1} dof), p = {_p(result.p_value)}; Iman–Davenport F_F = "
        f"{result.iman_davenport:.2f} ({k - 1}, {(k - 1) * (n - 1)} dof), "
        f"p = {_p(result.iman_davenport_p)}. Nemenyi critical difference at α = {result.alpha}: "
        f"CD = {result.cd:.2f} (mean ranks further apart than this differ; `cd_diagram.png`)."
        + (
            f" Not ranked (not run on every dataset, or not finite there): "
            f"{', '.join(result.left_out)}."
            if result.left_out
            else ""
        )
        + "\n",
        head,
        "|---|---:|" + "---:|" * n,
    ]
    for m in order:
        j = result.methods.index(m)
        per = " | ".join(f"{result.ranks[i][j]:g}" for i in range(n))
        lines.append(f"| {md_cell(labels.get(m, m))} | {result.mean_ranks[m]:.2f} | {per} |")
    return "\n".join(lines) + "\n"


def cd_diagram(result: Friedman, path: Path) -> Path | None:
    """The critical-difference diagram (scikit-posthocs): mean ranks on an axis, methods the
    Nemenyi test cannot tell apart joined by a bar, the CD drawn above. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from carrot.integrations.scikit_posthocs import draw_cd_diagram

    fig, ax = plt.subplots(figsize=(8.0, 1.8 + 0.3 * len(result.methods)))
    ranks = {m: result.mean_ranks[m] for m in result.methods}
    draw_cd_diagram(ax, ranks, result.nemenyi_p, cd=result.cd, alpha=result.alpha)
    ax.set_title(
        f"Mean rank of {result.metric} on {len(result.datasets)} datasets (1 = best); "
        f"Friedman p = {_p(result.p_value)}, Nemenyi CD = {result.cd:.2f}",
        fontsize=8,
        pad=34,  # above the CD bar and the rank ticks that scikit-posthocs draws over the axis
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
