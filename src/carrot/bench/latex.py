"""``results.tex``: the report's accuracy table for a paper (booktabs).

One row per method, one column per dataset, each cell mean ± standard deviation over the seeds;
the best mean of each dataset in bold; a dagger where the method differs from its baseline by the
paired t-test after Holm's adjustment (the report's family, see :func:`carrot.bench.report.analyze`),
a double dagger where the TOST shows it equivalent within ±δ (both from the comparison's verdict,
:func:`carrot.bench.verdict.verdict`). A second table gives the Bayesian comparison over datasets.
Needs ``\\usepackage{booktabs}`` in the document; nothing else beyond LaTeX's own commands.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from carrot.bench.bayes import BayesComparison
from carrot.bench.stats import ALPHA
from carrot.bench.verdict import shows_difference, shows_equivalence

__all__ = ["Compared", "latex_bayes_table", "latex_escape", "latex_table"]

_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


class Compared(Protocol):
    """What the table needs of a comparison (:class:`carrot.bench.report.Comparison` has it)."""

    dataset: str
    method: str
    baseline: str
    metric: str
    holm_p: float
    verdict: str
    margin: float


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (names such as ``carrot_guide``)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def latex_table(
    rows: Sequence[Mapping[str, Any]],
    comparisons: Sequence[Compared],
    *,
    metric: str = "final_top1",
    alpha: float = ALPHA,
    caption: str = "",
    label: str = "tab:carrot-results",
    digits: int = 2,
) -> str:
    """A ``table`` environment with a booktabs ``tabular`` of ``metric`` (methods × datasets).

    Args:
        rows: One mapping per run: ``dataset``, ``method``, ``seed`` and ``metric``.
        comparisons: The report's comparisons; those of ``metric`` whose verdict is better or
            worse get the dagger, those equivalent within ±δ the double dagger.
        metric: The column of ``rows`` to tabulate.
        alpha: The level named in the caption (the marks follow the comparisons' verdicts).
        caption: Text placed before the table's own explanation of bold and dagger (escaped).
        label: The ``\\label`` of the table.
        digits: Decimals of the mean and the standard deviation.
    """
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in rows))
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    values: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        values.setdefault((str(r["dataset"]), str(r["method"])), []).append(float(r[metric]))
    means = {key: statistics.mean(v) for key, v in values.items()}
    best = {d: max(means[(d, m)] for m in methods if (d, m) in means) for d in datasets}
    ours = [c for c in comparisons if c.metric == metric]
    marked = {(c.dataset, c.method) for c in ours if shows_difference(c.verdict)}
    equivalent = {(c.dataset, c.method) for c in ours if shows_equivalence(c.verdict)}
    margins = sorted({c.margin for c in ours if math.isfinite(c.margin)})
    baseline = {c.method: c.baseline for c in comparisons if c.metric == metric}

    def cell(d: str, m: str) -> str:
        if (d, m) not in values:
            return "--"
        v = values[(d, m)]
        mean = round(means[(d, m)], digits)
        body = f"{mean:.{digits}f}"
        if len(v) > 1:
            body += rf" \pm {statistics.stdev(v):.{digits}f}"
        if mean == round(best[d], digits):
            body = rf"\mathbf{{{body}}}"
        marks = (r"\dagger" if (d, m) in marked else "") + (
            r"\ddagger" if (d, m) in equivalent else ""
        )
        if marks:
            body += f"^{{{marks}}}"
        return f"${body}$"

    columns = "ll" + "r" * len(datasets)
    head = " & ".join(["method", "baseline", *(rf"\texttt{{{latex_escape(d)}}}" for d in datasets)])
    explain = (
        f"{latex_escape(metric)}: mean $\\pm$ standard deviation over seeds; best mean of each "
        f"dataset in bold; $\\dagger$: differs from the baseline (paired $t$-test, Holm-adjusted "
        f"$p < {alpha:g}$)"
        + (
            f"; $\\ddagger$: equivalent within $\\pm{margins[0]:g}$ (paired TOST, Holm-adjusted "
            f"$p < {alpha:g}$)."
            if len(margins) == 1
            else "."
        )
    )
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption) + ' ' if caption else ''}{explain}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        head + r" \\",
        r"\midrule",
    ]
    for m in methods:
        base = baseline.get(m)
        cells = [
            rf"\texttt{{{latex_escape(m)}}}",
            rf"\texttt{{{latex_escape(base)}}}" if base else "--",
            *(cell(d, m) for d in datasets),
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def latex_bayes_table(
    results: Sequence[BayesComparison], *, label: str = "tab:carrot-bayes", digits: int = 3
) -> str:
    """A ``table`` of the Bayesian comparison over datasets: per method and baseline, the number
    of datasets and P(worse), P(equivalent), P(better) (``--`` where there is no test). Empty
    when there is no comparison."""
    if not results:
        return ""
    rope = next((r.rope for r in results if math.isfinite(r.rope)), math.nan)

    def prob(x: float) -> str:
        return "--" if math.isnan(x) else f"${x:.{digits}f}$"

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{Bayesian signed-rank test over datasets (baycomp), rope $\pm{rope:g}$ points "
        rf"of {latex_escape(results[0].metric)}: posterior probabilities that the method is worse "
        rf"than its baseline by more than the rope, within it, or better.}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{llrrrr}",
        r"\toprule",
        r"method & baseline & datasets & $P(\mathrm{worse})$ & $P(\mathrm{equivalent})$ "
        r"& $P(\mathrm{better})$ \\",
        r"\midrule",
    ]
    for r in results:
        cells = [
            rf"\texttt{{{latex_escape(r.method)}}}",
            rf"\texttt{{{latex_escape(r.baseline)}}}",
            str(len(r.datasets)),
            prob(r.p_worse),
            prob(r.p_equivalent),
            prob(r.p_better),
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
