"""What a finished grid says: one row per run, paired comparisons with their baselines (difference
and equivalence tests, Holm-adjusted over the report's family, and their verdict), ranks and a
Bayesian comparison across datasets, markdown and LaTeX tables, CSV files and plots."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from carrot.bench.bayes import bayes_markdown, bayes_plots, bayes_rows, bayesian_comparisons
from carrot.bench.collect import collect
from carrot.bench.latex import latex_bayes_table, latex_table
from carrot.bench.plan import seeds_for_equivalence, seeds_to_detect
from carrot.bench.plots import plot
from carrot.bench.ranks import cd_diagram, friedman, friedman_markdown
from carrot.bench.selection import validation_table
from carrot.bench.stats import (
    ALPHA,
    EQUIVALENCE_MARGIN,
    PairedComparison,
    check_margin,
    holm,
    paired_comparison,
)
from carrot.bench.verdict import equivalence_note, verdict
from carrot.tables import csv_row, md_cell

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
    margin: float = math.nan
    """The equivalence margin δ (points), the TOST's ±δ."""
    tost_holm_p: float = math.nan
    """The TOST p-value after Holm's step-down over the same family (NaN: no test)."""
    verdict: str = ""
    """better, worse, equivalent within ±δ, undecided or no test: :func:`carrot.bench.verdict.
    verdict` of the two Holm-adjusted p-values."""
    seeds_to_detect: int | None = None
    """Seeds the paired t-test needs for 80% power against a true Δ of δ, with the observed sd of
    the differences (None: no sd, one seed or all differences equal)."""
    seeds_for_equivalence: int | None = None
    """Seeds the TOST needs for 80% power to show ±δ when the true Δ is 0, with the observed sd."""

    def significant(self, alpha: float = ALPHA) -> bool:
        """Holm-adjusted p-value below ``alpha``."""
        return not math.isnan(self.holm_p) and self.holm_p < alpha


def analyze(
    rows: Sequence[dict[str, Any]],
    baselines: Mapping[str, str | None],
    *,
    metrics: Sequence[str] = ("final_top1", "best_top1", "final_mean_class_acc"),
    family: Family = "all",
    margin: float = EQUIVALENCE_MARGIN,
) -> list[Comparison]:
    """Every method against its baseline (``baselines[method]``) on every dataset, over the
    seeds both have, with the t-test's and the TOST's (equivalence within ±``margin`` points)
    p-values adjusted by Holm's step-down, each family on its own, and their verdict.

    The family is one metric's comparisons over the whole report (``family="all"``): a report is
    read as one question (does any method beat its baseline anywhere?), so the error rate is
    controlled over every dataset and method at once; per dataset (``"dataset"``) is weaker and
    lets the number of datasets multiply the false positives. Metrics are separate families:
    final top-1 is the primary one, best top-1 and mean-class accuracy describe the same runs.
    Comparisons without a p-value (n < 2, no variance) are not in any family."""
    check_margin(margin)
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
                stats = paired_comparison(a, b, margin=margin)
                out.append(Comparison(dataset, method, base, metric, stats, seeds, margin=margin))
    groups: dict[tuple[str, str], list[Comparison]] = {}
    for c in out:
        groups.setdefault((c.metric, c.dataset if family == "dataset" else ""), []).append(c)
    for (metric, dataset), group in groups.items():
        tested = sum(not math.isnan(c.stats.p_value) for c in group)
        name = f"{metric} on {f'dataset {dataset}' if dataset else 'all datasets'} ({tested} tests)"
        tost = holm([c.stats.tost_p for c in group])
        for c, p, q in zip(group, holm([c.stats.p_value for c in group]), tost, strict=True):
            c.holm_p, c.tost_holm_p, c.family = p, q, name
            c.verdict = verdict(c.stats.diff, p, q, margin=margin)
            c.seeds_to_detect = seeds_to_detect(margin, c.stats.sd_diff)
            c.seeds_for_equivalence = seeds_for_equivalence(margin, c.stats.sd_diff)
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
        f"nothing about smaller ones.\n\n" + equivalence_note(finals, alpha=alpha)
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
            "margin": c.margin,
            "tost_holm_p": c.tost_holm_p,
            "verdict": c.verdict,
            "seeds_to_detect": "" if c.seeds_to_detect is None else c.seeds_to_detect,
            "seeds_for_equivalence": (
                "" if c.seeds_for_equivalence is None else c.seeds_for_equivalence
            ),
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


def _seeds(c: Comparison) -> str:
    """``detect / equivalence`` seed counts for ±δ, ``> n`` when the comparison has fewer."""
    a, b = c.seeds_to_detect, c.seeds_for_equivalence
    if a is None or b is None:
        return "n/a"
    return f"{a} / {b}" + (" > n" if max(a, b) > c.stats.n else "")


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
    compared = {c.method for c in comparisons}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines.append(f"### {dataset_labels.get(dataset, dataset)} (`{dataset}`)\n")
        lines.append(
            "| method | n | final top-1 | best top-1 (on test) | final mean-class | Δ final top-1 vs baseline [95% CI] "
            "| bootstrap 95% CI | wins | p (t) | p (Holm) | p (Wilcoxon) | d_z | MDD (80%) "
            "| seeds for ±δ | p (TOST, Holm) | verdict | Δ best top-1 (on test) [95% CI] | p (Holm) |"
        )
        lines.append(
            "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
        )
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
                    _seeds(c),
                    _p(c.tost_holm_p),
                    c.verdict,
                    f"**{delta_b}**" if cb.significant() else delta_b,
                    _p(cb.holm_p),
                ]
            else:  # a baseline, or a method whose baseline has no run paired with it here
                cells = [
                    "(no paired run of its baseline)" if method in compared else "(baseline)",
                    *[""] * 12,
                ]
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
        lines.extend(validation_table(rows, dataset, methods, method_labels))
        lines.append(
            "Geometry of the training batches (L2-normalized embeddings; mean over seeds of the "
            "first and the last epoch's batch means):\n"
        )
        lines.extend(geo)
        lines.append("")
    return "\n".join(lines)


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
    """Write the report folder: results.csv, trajectories.csv, comparisons.csv (with ``holm_p``,
    ``tost_holm_p`` and ``verdict``), bayes.csv (the Bayesian comparison over datasets),
    friedman.csv (mean ranks, when there is a Friedman test), results.md, results.tex and the
    plots (differences.png, geometry.png, and with two or more datasets cd_diagram.png and one
    bayes_<method>_vs_<baseline>.png per comparison); returns the markdown. The folder is written
    whole in a temporary sibling, then replaces ``report``: an error halfway leaves the report of
    before as it was, never CSVs of one and tables of another."""
    from carrot.folders import staged_folder

    bayes = bayesian_comparisons(comparisons)
    ranks = friedman(rows)
    text = (
        header
        + family_note(comparisons)
        + "\n"
        + markdown(rows, comparisons, dataset_labels=dataset_labels, method_labels=method_labels)
        + "\n"
        + friedman_markdown(ranks, method_labels=method_labels)
        + "\n"
        + bayes_markdown(bayes)
    )
    with staged_folder(report) as tmp:
        write_csv(tmp / "results.csv", list(rows))
        write_csv(tmp / "trajectories.csv", list(trajectories))
        write_csv(tmp / "comparisons.csv", comparison_rows(comparisons))
        write_csv(tmp / "bayes.csv", bayes_rows(bayes))
        (tmp / "results.md").write_text(text)
        caption = f"carrot bench accuracy: {report.name}."
        (tmp / "results.tex").write_text(
            latex_table(rows, comparisons, caption=caption) + "\n" + latex_bayes_table(bayes)
        )
        plot(rows, trajectories, comparisons, tmp)
        bayes_plots(bayes, tmp)
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
