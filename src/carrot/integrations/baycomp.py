"""baycomp for the bench's Bayesian comparison over datasets: the Bayesian signed-rank test with a
region of practical equivalence (Benavoli et al., ICML 2014 and JMLR 2017) and its simplex plot
(``pip install 'carrot-fgvc[bench]'``).

baycomp's hierarchical test would also use the seeds, but it needs pystan, which compiles a Stan
model with a C++ toolchain on first use (minutes, and a build toolchain the bench does not
otherwise need); the signed-rank test is baycomp's choice for one score per dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["signed_rank_posterior", "signed_rank_probabilities", "simplex_figure"]

_EXTRA = "pip install 'carrot-fgvc[bench]'"


def _import() -> ModuleType:
    try:
        import baycomp
    except ImportError as err:
        raise ImportError(
            "carrot's Bayesian comparison over datasets needs baycomp, which is not installed; "
            f"install it with: {_EXTRA}"
        ) from err
    return baycomp


def signed_rank_posterior(
    baseline: Sequence[float], method: Sequence[float], *, rope: float, samples: int, seed: int
) -> Any:
    """``baycomp.SignedRankTest(baseline, method, rope, nsamples=samples, random_state=seed)``:
    samples of the posterior of (P(baseline better), P(within ±rope), P(method better)) under
    the Dirichlet process prior with a pseudo-observation at 0 of weight 0.5.

    Args:
        baseline: The baseline's score on each dataset. Shape: (N,).
        method: The method's score on the same datasets. Shape: (N,).
    """
    import numpy as np

    baycomp = _import()
    return baycomp.SignedRankTest(
        np.asarray(baseline, dtype=np.float64),
        np.asarray(method, dtype=np.float64),
        rope,
        nsamples=samples,
        random_state=seed,
    )


def signed_rank_probabilities(posterior: Any) -> tuple[float, float, float]:
    """``posterior.probs()``: the share of posterior samples in which the baseline, the rope or
    the method has the largest probability (P(worse), P(equivalent), P(better))."""
    worse, rope, better = posterior.probs()
    return float(worse), float(rope), float(better)


def simplex_figure(posterior: Any, *, names: tuple[str, str]) -> Any:
    """baycomp's ``plot_simplex``: the posterior samples in the triangle whose corners are
    ``names[0]`` better, ``names[1]`` better and the rope; a matplotlib figure."""
    return posterior.plot_simplex(names=names)
