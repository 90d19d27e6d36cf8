"""What a finished grid says: one row per run, paired comparisons with their baselines (Holm-adjusted
over the report's family), ranks across datasets, markdown and LaTeX tables, CSV files and plots."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from carrot.bench.grid import Cell
from carrot.bench.latex import latex_table
from carrot.bench.ranks import cd_diagram, friedman, friedman_markdown
from carrot.bench.runfiles import read_records, read_summary
from carrot.bench.stats import ALPHA, PairedComparison, holm, paired_comparison
from carrot.tables import csv_row, md_cell
from carrot.train.report import GEOMETRY_KEYS

__all__ = [
    "Comparison",
    "Family",
    "analyze",
    "collect",
    "comparison_rows",
    "family_note",
    "markdown",
    "plot",
    "write_csv",
    "write_report",
]

Family = Literal["all", "dataset"]
"""Holm's family: every comparison of a metric in the report (``"all"``, the default), or those of
a metric on one dataset (``"dataset"``)."""

GEOMETRY = tuple(k for k in GEOMETRY_KEYS if k != "gamma_max")
"""Per-epoch CARROT statistics of the training batches (every method records them)."""


def collect(cell: Cell, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One results row and the per-epoch trajectory of a finished cell. ``first_*`` and
    ``final_*`` geometry: the means over the first and the last epoch's training batches. A run
    file that is not valid JSON, holds NaN or infinity, or an accuracy outside [0, 100] is a
    one-line ``ValueError`` naming it (:mod:`carrot.bench.runfiles`)."""
    run = cell.run_dir(out)
    summary = read_summary(run, keys=("epochs",))
    records = read_records(run)
    evaluated = [r for r in records if "top1" in r]
    best = max(evaluated, key=lambda r: r["top1"])
    first, last = records[0], records[-1]
    row: dict[str, Any] = {
        "dataset": cell.dataset,
        "method": cell.method,
        "seed": cell.seed,
        "epochs": summary["epochs"],
        "final_top1": evaluated[-1]["top1"],
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "final_mean_class_acc": evaluated[-1]["mean_class_acc"],
        "best_mean_class_acc": max(r["mean_class_acc"] for r in evaluated),
        "final_gamma_mean": last.get("gamma_mean", math.nan),
        "max_gamma": max(r.get("gamma_max", math.nan) for r in records),
        "final_r_mean": last.get("r_mean", math.nan),
        "final_gamma_frac_gt1": last.get("gamma_frac_gt1", math.nan),
        "seconds": sum(r["seconds"] for r in records),
    }
    for key in GEOMETRY:
        row[f"first_{key}"] = first.get(key, math.nan)
        row[f"final_{key}"] = last.get(key, math.nan)
    trajectory = [
        {
            "dataset": cell.dataset,
            "method": cell.method,
            "seed": cell.seed,
            "epoch": r["epoch"],
            "gamma_mean": r.get("gamma_mean", math.nan),
            "gamma_max": r.get("gamma_max", math.nan),
            "gamma_frac_gt1": r.get("gamma_frac_gt1", math.nan),
            "r_mean": r.get("r_mean", math.nan),
            "m_mean": r.get("m_mean", math.nan),
            "r_over_m_q50": r.get("r_over_m_q50", math.nan),
            "train_loss": r.get("train_loss", math.nan),
            "top1": r.get("top1", math.nan),
        }
        for r in records
    ]
    return row, trajectory


@dataclass
class Comparison:
    dataset: str
    method: str
    baseline: str
    metric: str
    stats: PairedComparison
    seeds: list[int] = field(default_factory=list)
    holm_p: float = math.nan
    """The paired t-test's p-value after Holm's step-down over ``family`` (NaN: no test)."""
    family: str = ""
    """The comparisons Holm's adjustment ran over, e.g. ``final_top1 on all datasets (12 tests)``."""

    def significant(self, alpha: float = ALPHA) -> bool:
        """Holm-adjusted p-value below ``alpha``."""
        return not math.isnan(self.holm_p) and self.holm_p < alpha


def analyze(
    rows: Sequence[dict[str, Any]],
    baselines: Mapping[str, str | None],
    *,
    metrics: Sequence[str] = ("final_top1", "best_top1", "final_mean_class_acc"),
    family: Family = "all",
) -> list[Comparison]:
    """Every method against its baseline (``baselines[method]``) on every dataset, over the
    seeds both have, with the t-test's p-value adjusted by Holm's step-down.

    The family is one metric's comparisons over the whole report (``family="all"``): a report is
    read as one question (does any method beat its baseline anywhere?), so the error rate is
    controlled over every dataset and method at once; per dataset (``"dataset"``) is weaker and
    lets the number of datasets multiply the false positives. Metrics are separate families:
    final top-1 is the primary one, best top-1 and mean-class accuracy describe the same runs.
    Comparisons without a p-value (n < 2, no variance) are not in any family."""
    if family not in ("all", "dataset"):
        raise ValueError(f"family must be 'all' or 'dataset', got {family!r}.")
    by_key = {(r["dataset"], r["method"], r["seed"]): r for r in rows}
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset):
            base = baselines.get(method)
            if base is None:
                continue
            seeds = sorted(
                s
                for (d, m, s) in by_key
                if d == dataset and m == method and (dataset, base, s) in by_key
            )
            if not seeds:
                continue
            for metric in metrics:
                a = [float(by_key[(dataset, method, s)][metric]) for s in seeds]
                b = [float(by_key[(dataset, base, s)][metric]) for s in seeds]
                out.append(
                    Comparison(dataset, method, base, metric, paired_comparison(a, b), seeds)
                )
    groups: dict[tuple[str, str], list[Comparison]] = {}
    for c in out:
        groups.setdefault((c.metric, c.dataset if family == "dataset" else ""), []).append(c)
    for (metric, dataset), group in groups.items():
        tested = sum(not math.isnan(c.stats.p_value) for c in group)
        name = f"{metric} on {f'dataset {dataset}' if dataset else 'all datasets'} ({tested} tests)"
        for c, p in zip(group, holm([c.stats.p_value for c in group]), strict=True):
            c.holm_p, c.family = p, name
    return out


def family_note(comparisons: Sequence[Comparison], *, alpha: float = ALPHA) -> str:
    """One paragraph naming Holm's family of the primary metric and the significance rule."""
    finals = [c for c in comparisons if c.metric == "final_top1"]
    families = list(dict.fromkeys(c.family for c in finals))
    if not families:
        return ""
    per_dataset = any("on dataset" in f for f in families)
    what = (
        f"one family per dataset ({', '.join(families)})"
        if per_dataset
        else f"one family: {families[0]}, every method against its baseline on every dataset"
    )
    return (
        f"Multiple comparisons: the paired t-test p-values are adjusted with Holm's step-down "
        f"(statsmodels `multipletests`, method holm) over {what}; best top-1 and mean-class "
        f"accuracy are families of their own (`holm_p` in comparisons.csv). A difference is "
        f"**bold** when its Holm-adjusted p < {alpha:g}. d_z: Cohen's paired effect size, mean "
        f"difference / sd of the differences. MDD: the true difference the paired t-test "
        f"(α = {alpha:g}, two-sided) would detect with 80% power with these seeds, given the "
        f"observed sd of the differences: a true effect that large would have been found 4 times "
        f"in 5, so a non-significant Δ speaks against effects of the MDD's size or more, and says "
        f"nothing about smaller ones.\n"
    )


def comparison_rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """The rows of comparisons.csv: dataset, method, baseline, metric, the statistics, seeds."""
    return [
        {
            "dataset": c.dataset,
            "method": c.method,
            "baseline": c.baseline,
            "metric": c.metric,
            **asdict(c.stats),
            "holm_p": c.holm_p,
            "holm_family": c.family,
            "seeds": " ".join(map(str, c.seeds)),
        }
        for c in comparisons
    ]


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _mean(rs: Sequence[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rs if key in r and not math.isnan(float(r[key]))]
    return statistics.mean(vals) if vals else math.nan


def markdown(
    rows: Sequence[dict[str, Any]],
    comparisons: Sequence[Comparison],
    *,
    dataset_labels: Mapping[str, str] | None = None,
    method_labels: Mapping[str, str] | None = None,
) -> str:
    """Per dataset: every method's accuracies, its paired difference to its baseline (t and
    bootstrap intervals, t-test p raw and Holm-adjusted, Wilcoxon p, effect size d_z and minimum
    detectable difference; bold when Holm-significant), and the geometry of the first and last
    epoch."""
    dataset_labels = dataset_labels or {}
    method_labels = method_labels or {}
    lines = []
    comp = {(c.dataset, c.method, c.metric): c for c in comparisons}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines.append(f"### {dataset_labels.get(dataset, dataset)} (`{dataset}`)\n")
        lines.append(
            "| method | n | final top-1 | best top-1 | final mean-class | Δ final top-1 vs baseline [95% CI] "
            "| bootstrap 95% CI | wins | p (t) | p (Holm) | p (Wilcoxon) | d_z | MDD (80%) "
            "| Δ best top-1 [95% CI] | p (Holm) |"
        )
        lines.append("|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
        geo = [
            "| method | mean γ, first → last epoch | γ > 1, first → last | r/m median [q10, q90], first "
            "→ last | max γ | final r |",
            "|---|---|---|---|---:|---:|",
        ]
        methods = dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset)
        for method in methods:
            rs = [r for r in rows if r["dataset"] == dataset and r["method"] == method]

            def ms(key: str, rs: list[dict[str, Any]] = rs) -> str:
                vals = [float(r[key]) for r in rs]
                sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
                return f"{statistics.mean(vals):.2f} ± {_fmt(sd)}"

            c = comp.get((dataset, method, "final_top1"))
            cb = comp.get((dataset, method, "best_top1"))
            name = md_cell(method_labels.get(method, method))
            if c is not None and cb is not None:
                s, sb = c.stats, cb.stats
                delta = f"{s.diff:+.2f} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}] vs {c.baseline}"
                delta_b = f"{sb.diff:+.2f} [{_fmt(sb.ci_low)}, {_fmt(sb.ci_high)}]"
                cells = [
                    f"**{delta}**" if c.significant() else delta,
                    f"[{_fmt(s.boot_low)}, {_fmt(s.boot_high)}]",
                    f"{s.wins}/{s.n}",
                    _p(s.p_value),
                    _p(c.holm_p),
                    _p(s.wilcoxon_p),
                    _fmt(s.effect_size),
                    _fmt(s.mdd),
                    f"**{delta_b}**" if cb.significant() else delta_b,
                    _p(cb.holm_p),
                ]
            else:
                cells = ["(baseline)", "", "", "", "", "", "", "", "", ""]
            lines.append(
                f"| {name} | {len(rs)} | {ms('final_top1')} | {ms('best_top1')} "
                f"| {ms('final_mean_class_acc')} | {' | '.join(cells)} |"
            )

            def span(
                key: str, scale: float = 1.0, digits: int = 2, rs: list[dict[str, Any]] = rs
            ) -> str:
                a, b = _mean(rs, f"first_{key}"), _mean(rs, f"final_{key}")
                return f"{_fmt(scale * a, digits)} → {_fmt(scale * b, digits)}"

            def rm(prefix: str, rs: list[dict[str, Any]] = rs) -> str:
                q = [_mean(rs, f"{prefix}_r_over_m_q{k}") for k in (50, 10, 90)]
                return f"{_fmt(q[0])} [{_fmt(q[1])}, {_fmt(q[2])}]"

            gmax = max((float(r["max_gamma"]) for r in rs), default=math.nan)
            geo.append(
                f"| {name} | {span('gamma_mean')} | {span('gamma_frac_gt1', 100, 0)}% "
                f"| {rm('first')} → {rm('final')} | {_fmt(gmax, 1)} | {_fmt(_mean(rs, 'final_r_mean'), 3)} |"
            )
        lines.append("")
        lines.append(
            "Geometry of the training batches (L2-normalized embeddings; mean over seeds of the "
            "first and the last epoch's batch means):\n"
        )
        lines.extend(geo)
        lines.append("")
    return "\n".join(lines)


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
        for y, c in zip(ys, cs, strict=True):
            s = c.stats
            color = (
                "tab:red"
                if c.significant() and s.diff < 0
                else "tab:green"
                if c.significant()
                else "tab:gray"
            )
            lo = 0.0 if math.isnan(s.ci_low) else s.diff - s.ci_low
            hi = 0.0 if math.isnan(s.ci_high) else s.ci_high - s.diff
            ax.errorbar([s.diff], [y], xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [f"{c.method} vs {c.baseline}" for c in cs], fontsize=7)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("Δ final top-1 (points), 95% CI")
    fig.suptitle("Paired differences over seeds (red/green: Holm-adjusted p < 0.05)", fontsize=10)
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


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(csv_row(r) for r in rows)


def write_report(
    report: Path,
    rows: Sequence[dict[str, Any]],
    trajectories: Sequence[dict[str, Any]],
    comparisons: Sequence[Comparison],
    *,
    header: str,
    dataset_labels: Mapping[str, str] | None = None,
    method_labels: Mapping[str, str] | None = None,
) -> str:
    """Write the report folder: results.csv, trajectories.csv, comparisons.csv (with ``holm_p``),
    friedman.csv (mean ranks, when there is a Friedman test), results.md, results.tex and the
    plots (differences.png, geometry.png, cd_diagram.png with two or more datasets); returns the
    markdown. The folder is written whole in a temporary sibling, then replaces ``report``: an
    error halfway leaves the report of before as it was, never CSVs of one and tables of another."""
    from carrot.folders import staged_folder

    ranks = friedman(rows)
    text = (
        header
        + family_note(comparisons)
        + "\n"
        + markdown(rows, comparisons, dataset_labels=dataset_labels, method_labels=method_labels)
        + "\n"
        + friedman_markdown(ranks, method_labels=method_labels)
    )
    with staged_folder(report) as tmp:
        write_csv(tmp / "results.csv", list(rows))
        write_csv(tmp / "trajectories.csv", list(trajectories))
        write_csv(tmp / "comparisons.csv", comparison_rows(comparisons))
        (tmp / "results.md").write_text(text)
        (tmp / "results.tex").write_text(
            latex_table(rows, comparisons, caption=f"carrot bench accuracy: {report.name}.")
        )
        plot(rows, trajectories, comparisons, tmp)
        if not isinstance(ranks, str):
            write_csv(
                tmp / "friedman.csv",
                [
                    {
                        "method": m,
                        "mean_rank": ranks.mean_ranks[m],
                        **{f"rank_{d}": ranks.ranks[i][j] for i, d in enumerate(ranks.datasets)},
                        "chi2": ranks.chi2,
                        "p_value": ranks.p_value,
                        "iman_davenport": ranks.iman_davenport,
                        "iman_davenport_p": ranks.iman_davenport_p,
                        "cd": ranks.cd,
                    }
                    for j, m in enumerate(ranks.methods)
                ],
            )
            cd_diagram(ranks, tmp / "cd_diagram.png")
    return text
