"""How many seeds a question needs: ``carrot bench plan --pilot DIR --effect δ``.

From a pilot report's paired standard deviations (``comparisons.csv``: ``sd_diff`` per dataset and
method against its baseline), the seeds needed for 80% power

- to detect a true mean difference of δ with the two-sided paired t-test at α = 0.05
  (statsmodels' ``TTestPower``: the noncentral t with n − 1 degrees of freedom and noncentrality
  δ √n / sd), and
- to show equivalence within ±δ with the paired TOST at α = 0.05 when the true difference is 0
  (:func:`tost_power`, exact: statsmodels has no power function for the paired TOST).

The pilot's sd is an estimate: with 3 seeds it can be off by a factor of two either way, so read
the counts as an order of magnitude, and plan again from the larger study.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from carrot.bench.stats import ALPHA, POWER, check_margin

__all__ = [
    "MOST_SEEDS",
    "PlanRow",
    "find_pilot",
    "plan",
    "plan_table",
    "seeds_for_equivalence",
    "seeds_to_detect",
    "tost_power",
]

MOST_SEEDS = 100_000
"""The largest seed count searched; beyond it a count is reported as not reachable."""


def tost_power(
    margin: float, sd: float, n: int, *, alpha: float = ALPHA, true_diff: float = 0.0
) -> float:
    """Power of the paired TOST of equivalence within ±``margin`` (each one-sided test at
    ``alpha``) with ``n`` pairs whose differences are normal with mean ``true_diff`` and sd ``sd``.

    Both tests reject when −δ + t_c s/√n < x̄ < δ − t_c s/√n, t_c the 1 − α quantile of t with
    ν = n − 1 dof. x̄ and s are independent, so with Z = (x̄ − μ)√n/σ ~ N(0, 1), u = s/σ ~
    √(χ²_ν / ν), Δ = δ√n/σ and m = μ√n/σ, the power is
    E_u[max(0, Φ(Δ − m − t_c u) − Φ(−Δ − m + t_c u))], one integral over χ²_ν (exact, the
    quantity Owen's Q function gives)."""
    from scipy import integrate, stats

    if n < 2:
        return math.nan
    nu = n - 1
    t_c = float(stats.t.ppf(1 - alpha, nu))
    big = margin * math.sqrt(n) / sd
    m = true_diff * math.sqrt(n) / sd
    log_norm = (nu / 2) * math.log(2) + math.lgamma(nu / 2)

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    def inside(v: float) -> float:  # math, not scipy's distributions: quad calls it ~10³ times
        if v <= 0:
            return 0.0
        u = math.sqrt(v / nu)
        width = phi(big - m - t_c * u) - phi(-big - m + t_c * u)
        density = math.exp((nu / 2 - 1) * math.log(v) - v / 2 - log_norm)  # χ²_ν
        return max(0.0, width) * density

    # Beyond nu (Δ / t_c)² the acceptance interval is empty; χ²_ν's mass outside its 1e-12
    # quantiles is negligible, and for large ν a narrow peak quad would miss on [0, top].
    low = float(stats.chi2.ppf(1e-12, nu))
    top = min(nu * (big / t_c) ** 2, float(stats.chi2.isf(1e-12, nu)))
    if top <= low:
        return 0.0
    value, _ = integrate.quad(inside, low, top, limit=200, epsabs=1e-10)
    return min(1.0, value)


def _smallest(power_at: Callable[[int], float], target: float) -> int | None:
    """The smallest n in [2, MOST_SEEDS] with ``power_at(n) >= target`` (power grows with n).

    Doubling, then bisection: the search never looks far beyond the answer, where the power is
    1 to the last digit and scipy's noncentral t returns NaN for some n."""
    low, high = 1, 2
    while not power_at(high) >= target:
        if high >= MOST_SEEDS:
            return None
        low, high = high, min(2 * high, MOST_SEEDS)
    while high - low > 1:  # power(low) < target <= power(high)
        mid = (low + high) // 2
        if power_at(mid) >= target:
            high = mid
        else:
            low = mid
    return high


@functools.lru_cache(maxsize=4096)
def seeds_to_detect(
    effect: float, sd: float, *, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """The fewest paired seeds (at least 2) with which the two-sided paired t-test at ``alpha``
    detects a true mean difference ``effect`` with probability ``power``, if the differences' sd is
    ``sd``; None when the sd is unknown or 0 (no t-test) or more than ``MOST_SEEDS`` are needed."""
    if not (math.isfinite(sd) and sd > 0):
        return None
    from carrot.integrations.statsmodels import paired_t_power

    return _smallest(lambda n: paired_t_power(effect / sd, n, alpha=alpha), power)


@functools.lru_cache(maxsize=4096)
def seeds_for_equivalence(
    margin: float, sd: float, *, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """The fewest paired seeds (at least 2) with which the paired TOST at ``alpha`` shows
    equivalence within ±``margin`` with probability ``power`` when the true difference is 0
    (:func:`tost_power`); None as for :func:`seeds_to_detect`."""
    if not (math.isfinite(sd) and sd > 0):
        return None
    return _smallest(lambda n: tost_power(margin, sd, n, alpha=alpha), power)


@dataclass(frozen=True)
class PlanRow:
    dataset: str
    method: str
    baseline: str
    pilot_n: int
    sd_diff: float
    """The pilot's sd of the paired differences (NaN with one seed)."""
    to_detect: int | None
    """Seeds for ``power`` to detect a difference of δ (None: see ``note``)."""
    for_equivalence: int | None
    """Seeds for ``power`` to show equivalence within ±δ (None: see ``note``)."""
    note: str = ""


def find_pilot(folder: Path) -> Path:
    """The ``comparisons.csv`` of a pilot: ``folder``'s own, or that of its one report folder (a
    grid's ``--out``). A one-line error otherwise."""
    if (folder / "comparisons.csv").is_file():
        return folder / "comparisons.csv"
    found = sorted(folder.glob("*/comparisons.csv")) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(
            f"--pilot must be a report folder of carrot bench accuracy (with comparisons.csv) or "
            f"a grid folder holding one, got {str(folder)!r}."
        )
    names = ", ".join(str(p.parent) for p in found)
    raise ValueError(f"--pilot {str(folder)!r} holds several reports; pass one of: {names}.")


def plan(
    comparisons_csv: Path,
    effect: float,
    *,
    metric: str = "final_top1",
    alpha: float = ALPHA,
    power: float = POWER,
) -> list[PlanRow]:
    """One :class:`PlanRow` per comparison of ``metric`` in a pilot's ``comparisons.csv``."""
    check_margin(effect, "--effect")
    if not 0 < power < 1:
        raise ValueError(f"--power must be between 0 and 1, got {power!r}.")
    with open(comparisons_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("metric") == metric]
    if rows and "sd_diff" not in rows[0]:
        raise ValueError(
            f"{comparisons_csv} has no sd_diff column (an older report); rewrite it with carrot "
            "bench accuracy ... --report-only."
        )
    if not rows:
        raise ValueError(f"{comparisons_csv} has no comparison of {metric}.")
    out = []
    for r in rows:
        n, sd = int(r["n"]), float(r["sd_diff"] or "nan")
        note = ""
        if n < 2:
            note = "one seed in the pilot: no sd of the differences"
        elif not sd > 0:
            note = "every paired difference equal in the pilot: no sd to plan from"
        detect = seeds_to_detect(effect, sd, alpha=alpha, power=power)
        equivalent = seeds_for_equivalence(effect, sd, alpha=alpha, power=power)
        if not note and (detect is None or equivalent is None):
            note = f"more than {MOST_SEEDS} seeds"
        out.append(
            PlanRow(r["dataset"], r["method"], r["baseline"], n, sd, detect, equivalent, note)
        )
    return out


def plan_table(
    rows: Sequence[PlanRow],
    effect: float,
    *,
    metric: str = "final_top1",
    alpha: float = ALPHA,
    power: float = POWER,
    source: str = "",
) -> str:
    """The plan as a markdown table with a line saying what it assumes."""

    def count(x: int | None) -> str:
        return "n/a" if x is None else str(x)

    lines = [
        f"Seeds for {power:.0%} power at α = {alpha:g} with δ = {effect:g} points of {metric}, "
        f"from the pilot's sd of the paired differences{f' ({source})' if source else ''}: "
        "to detect Δ = δ (two-sided paired t-test), and to show equivalence within ±δ (paired "
        "TOST, true Δ = 0).",
        "",
        "| dataset | method vs baseline | pilot seeds | sd of differences | seeds to detect δ "
        "| seeds for equivalence ±δ | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        sd = "n/a" if math.isnan(r.sd_diff) else f"{r.sd_diff:.3f}"
        lines.append(
            f"| {r.dataset} | {r.method} vs {r.baseline} | {r.pilot_n} | {sd} "
            f"| {count(r.to_detect)} | {count(r.for_equivalence)} | {r.note} |"
        )
    return "\n".join(lines) + "\n"
