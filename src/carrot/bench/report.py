"""What a finished grid says: one row per run, paired comparisons with their baselines, markdown
tables, CSV files and plots."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from carrot.bench.grid import Cell
from carrot.bench.stats import PairedComparison, paired_comparison
from carrot.train.report import GEOMETRY_KEYS

__all__ = ["Comparison", "analyze", "collect", "comparison_rows", "markdown", "plot", "write_csv"]

GEOMETRY = tuple(k for k in GEOMETRY_KEYS if k != "gamma_max")
"""Per-epoch CARROT statistics of the training batches (every method records them)."""


def _records(run: Path) -> list[dict[str, Any]]:
    import json

    text = (run / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def collect(cell: Cell, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One results row and the per-epoch trajectory of a finished cell. ``first_*`` and
    ``final_*`` geometry: the means over the first and the last epoch's training batches."""
    import json

    run = cell.run_dir(out)
    summary = json.loads((run / "summary.json").read_text())
    records = _records(run)
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


def analyze(
    rows: Sequence[dict[str, Any]],
    baselines: Mapping[str, str | None],
    *,
    metrics: Sequence[str] = ("final_top1", "best_top1", "final_mean_class_acc"),
) -> list[Comparison]:
    """Every method against its baseline (``baselines[method]``) on every dataset, over the
    seeds both have."""
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
    return out


def comparison_rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """The rows of comparisons.csv: dataset, method, baseline, metric, the statistics, seeds."""
    return [
        {
            "dataset": c.dataset,
            "method": c.method,
            "baseline": c.baseline,
            "metric": c.metric,
            **asdict(c.stats),
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
    bootstrap intervals, t-test and Wilcoxon p), and the geometry of the first and last epoch."""
    dataset_labels = dataset_labels or {}
    method_labels = method_labels or {}
    lines = []
    comp = {(c.dataset, c.method, c.metric): c for c in comparisons}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines.append(f"### {dataset_labels.get(dataset, dataset)} (`{dataset}`)\n")
        lines.append(
            "| method | n | final top-1 | best top-1 | final mean-class | Δ final top-1 vs baseline [95% CI] "
            "| bootstrap 95% CI | wins | p (t) | p (Wilcoxon) | Δ best top-1 [95% CI] | p (t) |"
        )
        lines.append("|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|---:|")
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
            name = method_labels.get(method, method)
            if c is not None and cb is not None:
                s, sb = c.stats, cb.stats
                cells = [
                    f"{s.diff:+.2f} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}] vs {c.baseline}",
                    f"[{_fmt(s.boot_low)}, {_fmt(s.boot_high)}]",
                    f"{s.wins}/{s.n}",
                    _p(s.p_value),
                    _p(s.wilcoxon_p),
                    f"{sb.diff:+.2f} [{_fmt(sb.ci_low)}, {_fmt(sb.ci_high)}]",
                    _p(sb.p_value),
                ]
            else:
                cells = ["(baseline)", "", "", "", "", "", ""]
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
                if s.significant() and s.diff < 0
                else "tab:green"
                if s.significant()
                else "tab:gray"
            )
            lo = 0.0 if math.isnan(s.ci_low) else s.diff - s.ci_low
            hi = 0.0 if math.isnan(s.ci_high) else s.ci_high - s.diff
            ax.errorbar([s.diff], [y], xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [f"{c.method} vs {c.baseline}" for c in cs], fontsize=7)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("Δ final top-1 (points), 95% CI")
    fig.suptitle("Paired differences over seeds (red/green: p < 0.05)", fontsize=10)
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
        writer.writerows(rows)
