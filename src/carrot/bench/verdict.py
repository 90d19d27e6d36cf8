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

from carrot.bench.stats import ALPHA

__all__ = [
    "BETTER",
    "EQUIVALENT",
    "NO_TEST",
    "UNDECIDED",
    "WORSE",
    "shows_difference",
    "shows_equivalence",
    "verdict",
]

BETTER = "better"
WORSE = "worse"
EQUIVALENT = "equivalent within ±{margin:g}"
UNDECIDED = "undecided"
NO_TEST = "no test"


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
