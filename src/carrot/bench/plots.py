"""The report's plots: ``differences.png`` (each comparison's paired difference with its interval and
the equivalence band, coloured by its verdict) and ``geometry.png`` (the CARROT statistics over
training)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from carrot.bench.stats import PairedComparison


class Comparison(Protocol):
    """What a plot reads of :class:`carrot.bench.report.Comparison` (a protocol: the report
    imports this module)."""

    @property
    def metric(self) -> str: ...

    @property
    def dataset(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def baseline(self) -> str: ...

    @property
    def margin(self) -> float: ...

    @property
    def verdict(self) -> str: ...

    @property
    def stats(self) -> PairedComparison: ...

__all__ = ["plot"]

_COLORS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue"}
"""The verdict's first word (:func:`carrot.bench.verdict.verdict`) to a colour; others gray."""


def plot(
    rows: Sequence[dict[str, Any]],
    trajectories: Sequence[dict[str, Any]],
    comparisons: Sequence[Comparison],
    out: Path,
) -> list[Path]:
    """``differences.png`` (Δ top-1 with 95% CI per dataset) and ``geometry.png`` (mean γ, max γ,
    within-class radius, nearest-centroid distance and test accuracy over training per method,
    mean over seeds)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    written = []
    finals = [c for c in comparisons if c.metric == "final_top1"]
    most = max((sum(c.dataset == d for c in finals) for d in datasets), default=1)
    height = max(3.6, 0.42 * most + 1.2)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), height), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        cs = [c for c in finals if c.dataset == dataset]
        ys = list(range(len(cs)))
        margins = {c.margin for c in cs if math.isfinite(c.margin)}
        for m in margins:  # the equivalence band ±δ
            ax.axvspan(-m, m, color="tab:blue", alpha=0.08, linewidth=0)
        for y, c in zip(ys, cs, strict=True):
            s = c.stats
            color = _COLORS.get(c.verdict.split(",")[0].split(" ")[0], "tab:gray")
            lo = 0.0 if math.isnan(s.ci_low) else s.diff - s.ci_low
            hi = 0.0 if math.isnan(s.ci_high) else s.ci_high - s.diff
            ax.errorbar([s.diff], [y], xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [f"{c.method} vs {c.baseline}" for c in cs], fontsize=7)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("Δ final top-1 (points), 95% CI")
    fig.suptitle(
        "Paired differences over seeds, 95% CI; verdict (Holm): green better, red worse, blue "
        "equivalent within the shaded ±δ, gray undecided",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "differences.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    keys = (
        ("gamma_mean", "mean γ", True),
        ("gamma_max", "max γ", True),
        ("r_mean", "within-class RMS radius r", False),
        ("m_mean", "nearest-centroid distance m", False),
        ("top1", "test top-1 %", False),
    )
    fig, axes = plt.subplots(
        len(datasets), len(keys), figsize=(4.0 * len(keys), 3.0 * len(datasets)), squeeze=False
    )
    for row_axes, dataset in zip(axes, datasets, strict=True):
        methods = list(dict.fromkeys(t["method"] for t in trajectories if t["dataset"] == dataset))
        for ax, (key, label, log) in zip(row_axes, keys, strict=True):
            for method in methods:
                ts = [t for t in trajectories if t["dataset"] == dataset and t["method"] == method]
                points = []
                for e in sorted({t["epoch"] for t in ts}):
                    vals = [t[key] for t in ts if t["epoch"] == e and not math.isnan(t[key])]
                    if vals:
                        points.append((e, sum(vals) / len(vals)))
                if points:
                    ax.plot(
                        [p[0] for p in points], [p[1] for p in points], marker=".", label=method
                    )
            ax.set_title(f"{dataset}: {label}", fontsize=9)
            ax.set_xlabel("epoch")
            if log:
                ax.set_yscale("log")
        if row_axes[0].get_legend_handles_labels()[0]:
            row_axes[0].legend(fontsize=6)
    fig.tight_layout()
    path = out / "geometry.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
