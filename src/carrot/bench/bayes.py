"""Bayesian comparison over datasets (Benavoli et al., JMLR 2017): each method against its baseline
across the datasets of a report, with a region of practical equivalence (rope) of ±δ.

The test is baycomp's Bayesian signed-rank test on the per-dataset mean paired differences (the
mean over the seeds both ran): it gives the posterior probabilities that the method is worse than
its baseline by more than δ, within ±δ, or better by more than δ, as the share of 20,000 posterior
samples (seeded, so a report is reproducible) in which each region is the most probable.
baycomp's hierarchical test, which would also use the seeds, needs pystan (see
:mod:`carrot.integrations.baycomp`). The signed-rank test sees one number per dataset: with the
two to five datasets of a bench report its probabilities stay near the prior's, and the per-dataset
verdicts (TOST and t-test over the seeds) carry the evidence of each dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from carrot.bench.stats import PairedComparison

__all__ = [
    "BAYES_SAMPLES",
    "BAYES_SEED",
    "BayesComparison",
    "bayes_markdown",
    "bayes_plots",
    "bayes_rows",
    "bayesian_comparisons",
]

BAYES_SAMPLES = 20_000
"""Posterior samples per comparison (Monte Carlo error of a probability below 0.004)."""
BAYES_SEED = 0


class _Compared(Protocol):
    dataset: str
    method: str
    baseline: str
    metric: str
    stats: PairedComparison
    margin: float


@dataclass(frozen=True)
class BayesComparison:
    method: str
    baseline: str
    metric: str
    rope: float
    """Half-width δ of the region of practical equivalence, in points of ``metric``."""
    datasets: tuple[str, ...]
    """The datasets both ran on, in the report's order."""
    baseline_means: tuple[float, ...]
    method_means: tuple[float, ...]
    """Means over the paired seeds on each dataset. Shape: (N,)."""
    p_worse: float = math.nan
    p_equivalent: float = math.nan
    p_better: float = math.nan
    """Posterior probabilities (sum 1); NaN when there is no test, see ``note``."""
    note: str = ""
    """Why there is no test, or the report's datasets this comparison lacks."""

    @property
    def picture(self) -> str:
        """The file name of the simplex plot."""
        return f"bayes_{self.method}_vs_{self.baseline}.png"


def bayesian_comparisons(
    comparisons: Sequence[_Compared],
    *,
    metric: str = "final_top1",
    samples: int = BAYES_SAMPLES,
    seed: int = BAYES_SEED,
) -> list[BayesComparison]:
    """One :class:`BayesComparison` per method with a baseline, over the datasets on which both
    ran. A method compared on fewer than two datasets gets no test (a note says why); datasets of
    the report where the method was not compared are named in the note."""
    from carrot.integrations.baycomp import signed_rank_posterior, signed_rank_probabilities

    ours = [c for c in comparisons if c.metric == metric]
    every = list(dict.fromkeys(c.dataset for c in ours))
    out = []
    for method, baseline in dict.fromkeys((c.method, c.baseline) for c in ours):
        cs = [
            c
            for c in ours
            if (c.method, c.baseline) == (method, baseline) and math.isfinite(c.stats.diff)
        ]
        rope = cs[0].margin
        names = tuple(c.dataset for c in cs)
        missing = [d for d in every if d not in names]
        note = f"not compared on {', '.join(missing)}" if missing else ""
        result = BayesComparison(
            method,
            baseline,
            metric,
            rope,
            names,
            tuple(c.stats.baseline_mean for c in cs),
            tuple(c.stats.method_mean for c in cs),
        )
        if len(cs) < 2 or not math.isfinite(rope):
            why = "needs two or more datasets" if len(cs) < 2 else "no equivalence margin"
            out.append(_replace(result, note="; ".join(filter(None, (why, note)))))
            continue
        posterior = signed_rank_posterior(
            result.baseline_means, result.method_means, rope=rope, samples=samples, seed=seed
        )
        worse, rope_p, better = signed_rank_probabilities(posterior)
        out.append(_replace(result, p_worse=worse, p_equivalent=rope_p, p_better=better, note=note))
    return out


def _replace(result: BayesComparison, **changes: Any) -> BayesComparison:
    import dataclasses

    return dataclasses.replace(result, **changes)


def bayes_rows(results: Sequence[BayesComparison]) -> list[dict[str, Any]]:
    """The rows of bayes.csv."""
    return [
        {
            "method": r.method,
            "baseline": r.baseline,
            "metric": r.metric,
            "rope": r.rope,
            "n_datasets": len(r.datasets),
            "datasets": " ".join(r.datasets),
            "p_worse": r.p_worse,
            "p_equivalent": r.p_equivalent,
            "p_better": r.p_better,
            "test": "baycomp SignedRankTest" if not math.isnan(r.p_better) else "",
            "note": r.note,
        }
        for r in results
    ]


def bayes_markdown(results: Sequence[BayesComparison]) -> str:
    """The section of results.md: the three probabilities of each comparison."""
    if not results:
        return ""

    def prob(x: float) -> str:
        return "" if math.isnan(x) else f"{x:.3f}"

    rope = next((r.rope for r in results if math.isfinite(r.rope)), math.nan)
    lines = [
        "### Bayesian comparison over datasets (baycomp signed-rank test, rope ±δ)\n",
        f"Each method against its baseline across the datasets (mean {results[0].metric} over "
        f"the paired seeds on each): posterior probabilities that the method is worse by more "
        f"than δ = {rope:g} points, within ±δ (practically equivalent), or better by more than δ "
        f"(Benavoli et al., JMLR 2017; baycomp `SignedRankTest`, {BAYES_SAMPLES} samples, seed "
        f"{BAYES_SEED}). An empty cell: no test (fewer than two datasets). With few datasets "
        f"the probabilities stay close to the prior: read them beside the per-dataset verdicts. "
        f"Simplex plots: `bayes_<method>_vs_<baseline>.png`.\n",
        "| method | baseline | datasets | P(worse) | P(equivalent) | P(better) | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.method} | {r.baseline} | {len(r.datasets)} | {prob(r.p_worse)} "
            f"| {prob(r.p_equivalent)} | {prob(r.p_better)} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def bayes_plots(
    results: Sequence[BayesComparison],
    folder: Path,
    *,
    samples: int = BAYES_SAMPLES,
    seed: int = BAYES_SEED,
) -> list[Path]:
    """One simplex plot per tested comparison (baycomp's ``plot_simplex``), ``bayes_*.png`` in
    ``folder``; those of an earlier report are removed first. None without matplotlib."""
    for stale in folder.glob("bayes_*_vs_*.png"):
        stale.unlink()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from carrot.integrations.baycomp import signed_rank_posterior, simplex_figure

    written = []
    for r in results:
        if math.isnan(r.p_better):
            continue
        posterior = signed_rank_posterior(
            r.baseline_means, r.method_means, rope=r.rope, samples=samples, seed=seed
        )
        fig = simplex_figure(posterior, names=(r.baseline, r.method))
        fig.suptitle(
            f"{r.method} vs {r.baseline}: {r.metric} on {len(r.datasets)} datasets, "
            f"rope ±{r.rope:g}",
            fontsize=9,
        )
        path = folder / r.picture
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
