"""The distance m_c from a class to the nearest other one: among the batch's centroids, or among
class centers remembered from earlier batches (read only: :class:`Remembered`)."""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from carrot.functional.limits import pairwise_memory
from carrot.functional.numerics import _NO_DATA, _exponent, _ldexp

__all__ = ["Remembered", "nearest_reference", "remembered_distance"]

# How many nearest-centroid candidates, found on a Gram matrix, get their distance recomputed
# directly. The Gram matrix only ranks; the reported m_c never comes from it.
_NEAREST_CANDIDATES = 4
# Up to this many C·R·D differences, nearest distances are all computed directly (cheaper than
# ranking on a Gram matrix at these sizes, and a (C, R, D) temporary of at most 512 KB in float32).
_DIRECT_PAIRS = 2**17


def _no_grad() -> contextlib.AbstractContextManager[Any]:
    """``torch.no_grad()``, or nothing where gradients are off already (entering costs more)."""
    return torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext()


def nearest_reference(
    query: Tensor, refs: Tensor, blocked: Tensor | None, *, same: bool, rescale: bool = False
) -> tuple[Tensor, Tensor]:
    """Distance from every query row to the nearest reference row that is not blocked, and its index.

    For few pairs (C·R·D up to 2^17) every distance is a direct difference. For more, candidates
    are ranked on the float64 Gram matrix of the centered vectors (|a|²+|b|²-2a·b cancels when
    two vectors are close: in float32 more than a few centroids within its rounding of each other
    could push the nearest one out of the shortlist), then the distance to each of the best few
    is recomputed as a direct difference. Either way the reported distance is accurate; it carries the gradient of
    ``query`` (references are constants here unless they are the query itself). A row without an
    allowed reference gets ``inf``.

    Args:
        query: Shape: (C, D).
        refs: Shape: (R, D); the very tensor ``query`` when ``same``.
        blocked: Pairs that may not be chosen, or None. Shape: (C, R).
        same: ``refs`` is ``query``: the diagonal is blocked too.
        rescale: Compute in units of a common power of two of ``query`` and ``refs`` (for
            inputs that may lie beyond 2^±30; :func:`class_geometry`'s centroids never do).
    """
    if rescale:
        e = _exponent(query.detach())
        if not same:
            e = torch.maximum(e, _exponent(refs.detach()))
        e = torch.where(e == _NO_DATA, 0, e)
        scaled = _ldexp(query, -e)
        scaled_refs = scaled if same else _ldexp(refs.to(query.dtype), -e)
        dist, nearest = nearest_reference(scaled, scaled_refs, blocked, same=same)
        return _ldexp(dist, e), nearest
    c, d = query.shape
    r = refs.shape[0]
    k = min(r - 1 if same else r, _NEAREST_CANDIDATES)
    if c == 0 or k < 1:
        return torch.full((c,), float("inf"), dtype=query.dtype, device=query.device), torch.zeros(
            c, dtype=torch.long, device=query.device
        )
    with _no_grad():
        if c * r * d <= _DIRECT_PAIRS:
            # Few pairs: every distance directly (accurate, no Gram matrix ranking needed).
            pairs = query[:, None] - refs.to(query.dtype)[None]  # (C, R, D)
            dist = torch.linalg.vector_norm(pairs, dim=2)  # (C, R)
            if same:
                dist.fill_diagonal_(float("inf"))
            if blocked is not None:
                dist.masked_fill_(blocked, float("inf"))
            best, nearest = dist.min(dim=1)
        else:
            best, nearest = _ranked_nearest(query, refs, blocked, same=same, k=k)
    if not query.requires_grad:
        return best, nearest
    other = (
        refs.index_select(0, nearest)
        if same
        else refs.detach().to(query.dtype).index_select(0, nearest)
    )
    m = torch.linalg.vector_norm(query - other, dim=1)
    return (m if blocked is None else torch.where(torch.isfinite(best), m, best)), nearest


def _ranked_nearest(
    query: Tensor, refs: Tensor, blocked: Tensor | None, *, same: bool, k: int
) -> tuple[Tensor, Tensor]:
    """:func:`nearest_reference`'s search for many pairs: the best ``k`` candidates of each row
    ranked on the Gram matrix, their distances recomputed directly. Shapes: (C,), (C,). Runs
    without autograd (the caller's ``no_grad``).

    The ranking is in float64 whatever the input dtype (the C × R matrix is small): with a
    float32 Gram matrix, 30 centroids within 1e-4 of each other among 60 at D = 128 left the
    true nearest out of the shortlist for 24 classes (m_c up to 14% too large)."""
    c, d = query.shape
    with torch.no_grad():
        wide = query.to(torch.float64)
        center = wide.mean(0)
        q = wide - center
        ref = q if same else refs.to(torch.float64) - center
        q_sq = torch.linalg.vector_norm(q, dim=1).square_()
        r_sq = q_sq if same else torch.linalg.vector_norm(ref, dim=1).square_()
        with pairwise_memory(
            "the matrix of distances between class centroids (C classes in the batch × R "
            "references)",
            c,
            refs.shape[0],
            torch.float64,
            "C is the number of classes in one batch (or the batch size with sync_free). Use "
            "fewer classes per batch (a P×K sampler with a smaller P) or a smaller batch.",
        ):
            d2 = torch.addmm(q_sq[:, None] + r_sq, q, ref.T, alpha=-2.0)  # (C, R)
        if same:
            d2.fill_diagonal_(float("inf"))
        if blocked is not None:
            d2.masked_fill_(blocked, float("inf"))
        ranked, candidates = d2.topk(k, dim=1, largest=False)  # (C, k)
        chosen = refs.to(query.dtype).index_select(0, candidates.view(-1)).view(c, k, d)
        exact = torch.linalg.vector_norm(chosen.sub_(query[:, None]), dim=2)  # (C, k)
        if blocked is not None:
            exact.masked_fill_(torch.isinf(ranked), float("inf"))
        best, pick = exact.min(dim=1)
        nearest = candidates.gather(1, pick[:, None]).squeeze(1)  # (C,)
    return best, nearest


class Remembered(NamedTuple):
    """Class centers remembered from earlier batches, read-only (``ClassMemory.remembered()``).

    The functions here only read them; the memory's owner (a module or the trainer) updates it
    from the ``centers``, ``r``, ``classes`` and ``valid`` of the operator's stats.
    """

    centers: Tensor
    """Remembered centers (centroids, or mean directions in angular space). Shape: (N, D)."""
    seen: Tensor
    """Whether class n has been remembered yet. Shape: (N,)."""


def remembered_distance(
    centers: Tensor, classes: Tensor, remembered: Remembered, *, unit: bool = False
) -> Tensor:
    """Distance from each batch class center to the nearest remembered center of another class
    (``inf`` where none has been seen yet).

    Args:
        centers: The batch's class centers. Shape: (C, D).
        classes: Their labels, in [0, N). Shape: (C,).
        remembered: The remembered centers.
        unit: Centers are directions (angular space): compare with the remembered centers
            re-normalized, since an average of unit vectors is shorter than one.

    Returns:
        Euclidean (chord) distances. Shape: (C,).
    """
    refs, seen = remembered
    n, dim = refs.shape
    if centers.ndim != 2 or centers.shape[1] != dim:
        raise ValueError(
            f"centers must have shape (C, {dim}), got {tuple(centers.shape)}; the memory was "
            f"built for dim={dim}."
        )
    torch._assert_async(
        ((classes >= 0) & (classes < n)).all(),
        f"ClassMemory: class labels must lie in [0, {n}).",
    )
    ids = torch.arange(n, device=classes.device)
    blocked = ~seen[None, :] | (ids[None, :] == classes[:, None])  # (C, N)
    if unit:
        refs = F.normalize(refs, dim=1)
    dist, _ = nearest_reference(centers, refs, blocked, same=False, rescale=True)
    return dist
