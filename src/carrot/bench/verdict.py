"""The one place where a paired comparison's p-values become words.

Two Holm-adjusted tests per comparison: the paired t-test of "no difference" and the paired TOST of
"a difference of ±δ or more". Each rejects at ``alpha``; what was rejected is the verdict:

| difference test rejects | TOST rejects | verdict |
|---|---|---|
| yes, Δ > 0 | no | better |
| yes, Δ < 0 | no | worse |
| no | yes | equivalent within ±δ |
| yes | yes | better (or worse), within ±δ: a real but practically negligible difference |
| no | no | undecided: the seeds can show neither |
| no test (one seed, or every difference equal) | | no test |

"Undecided" is the honest reading of a non-significant difference: it is not "no difference".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from carrot.bench.stats import ALPHA, PairedComparison

__all__ = [
    "BETTER",
    "EQUIVALENT",
    "NO_TEST",
    "UNDECIDED",
    "WORSE",
    "equivalence_note",
    "shows_difference",
    "shows_equivalence",
    "verdict",
]

BETTER = "better"
WORSE = "worse"
EQUIVALENT = "equivalent within ±{margin:g}"
UNDECIDED = "undecided"
NO_TEST = "no test"


class _Planned(Protocol):
    """What the report's note needs of a comparison (:class:`carrot.bench.report.Comparison`)."""

    stats: PairedComparison
    margin: float
    seeds_to_detect: int | None
    seeds_for_equivalence: int | None


def verdict(
    diff: float, holm_p: float, tost_holm_p: float, *, margin: float, alpha: float = ALPHA
) -> str:
    """The verdict of a paired comparison (see the module's table).

    Args:
        diff: The mean paired difference, method − baseline.
        holm_p: The paired t-test's p-value after Holm's adjustment (NaN: no test).
        tost_holm_p: The TOST p-value of equivalence within ±``margin`` after Holm's adjustment
            over the same family (NaN: no test).
        margin: The equivalence margin δ, in the units of ``diff``.
        alpha: The level of both tests.
    """
    if math.isnan(holm_p) and math.isnan(tost_holm_p):
        return NO_TEST
    different = not math.isnan(holm_p) and holm_p < alpha
    equivalent = not math.isnan(tost_holm_p) and tost_holm_p < alpha
    within = EQUIVALENT.format(margin=margin)
    if different:
        word = BETTER if diff > 0 else WORSE
        return f"{word}, {within.removeprefix('equivalent ')}" if equivalent else word
    return within if equivalent else UNDECIDED


def shows_difference(word: str) -> bool:
    """Whether a verdict says better or worse (with or without "within ±δ")."""
    return word.startswith((BETTER, WORSE))


def shows_equivalence(word: str) -> bool:
    """Whether a verdict says the difference is within ±δ (equivalent, or a negligible one)."""
    return "within ±" in word


def equivalence_note(finals: Sequence[_Planned], *, alpha: float = ALPHA) -> str:
    """How to read the TOST, the verdict and the seed counts, and which comparisons have too few
    seeds to reach 80% power at ±δ."""
    margin = finals[0].margin
    short = [
        c
        for c in finals
        if c.seeds_to_detect is not None
        and c.seeds_for_equivalence is not None
        and max(c.seeds_to_detect, c.seeds_for_equivalence) > c.stats.n
    ]
    text = (
        f"Equivalence: p (TOST) is the paired two one-sided t-tests (statsmodels `ttost_paired`) "
        f"of a true Δ within ±δ = ±{margin:g} points, Holm-adjusted over the same family. The "
        f"verdict: *better* or *worse* when the t-test rejects no difference, *equivalent "
        f"within ±{margin:g}* when the TOST rejects a difference of ±δ or more (both: a real but "
        f"negligible difference), *undecided* when neither does (not evidence of no "
        f"difference), *no test* with one seed or equal differences on every seed (all at "
        f"α = {alpha:g}, after Holm). Seeds for ±δ: the seeds the t-test needs for 80% power "
        f"against Δ = δ / the TOST needs for 80% power to show ±δ when Δ = 0, with the observed "
        f"sd of the differences (`carrot bench plan` for a new study)."
    )
    if short:
        text += (
            f" **{len(short)} of {len(finals)} comparisons have too few seeds for that** "
            f"(marked `> n`)."
        )
    return text + "\n"
