"""The CARROT formulas: the class geometry of a batch of embeddings and its expansion.

For every class ``c`` present in a batch of embeddings ``z_i`` with labels ``y_i``
(``n_c`` samples of class ``c``)::

    μ_c    = (1 / n_c) Σ_{y_i = c} z_i                     centroid
    r_c    = sqrt((1 / n_c) Σ_{y_i = c} ||z_i - μ_c||²)    RMS radius (or their median distance)
    m_c    = min_{c' ≠ c} ||μ_c - μ_c'||                   distance to the nearest other centroid
    γ_c    = max(1, m_c / (f r_c + ε))                     expansion (f = 2 in the guide)
    T_c(z) = μ_c + γ_c (z - μ_c)                           the CARROT operator

Everything here is vectorized over classes (no Python loop, no host sync except the one
``torch.unique`` needs to size its output; ``sync_free=True`` avoids even that) and computed in
float32 or wider whatever the input dtype. Embeddings whose magnitudes lie beyond 2^±30 are
scaled by a power of two first (exact), so that squared norms never overflow or underflow:
finite input gives finite output.

The same function serves one process and many: a :class:`StatsReducer` (see
:mod:`carrot.distributed`) decides which labels the class list sees and sums the per-class
partial sums over ranks. Without one, the statistics are those of the local batch.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from carrot.functional.nearest import _no_grad
from carrot.functional.numerics import (
    _NO_DATA,
    _cpu_exponent,
    _eager_cpu,
    _exponent,
    _is_one,
    _ldexp,
    check_batch,
    compute_dtype,
    no_autocast,
    safe_normalize,
)
from carrot.functional.options import RadiusStat, Space
from carrot.functional.slots import _all_valid, _class_median, _nearest_centroid, _segment

__all__ = [
    "ClassGeometry",
    "StatsReducer",
    "chord_to_angle",
    "class_geometry",
    "log_map",
]

# A class whose RMS radius is below this many units of roundoff of its centroid's norm has no
# spread (one image, or copies of one image): its γ is 1.
_DEGENERATE_ULPS = 64

class StatsReducer(Protocol):
    """Decides which samples the statistics see; implemented by :mod:`carrot.distributed`."""

    def gather_labels(self, y: Tensor, exponent: Tensor) -> tuple[Tensor, int, Tensor]:
        """Returns the labels of the whole (global) batch, the offset of the local ones in it and
        the largest of the participants' scale exponents (a 0-d integer tensor)."""
        ...

    def sum(self, x: Tensor) -> Tensor:
        """Sums a per-class partial sum over all participants (autograd-aware)."""
        ...

    def gather(self, x: Tensor) -> Tensor:
        """Concatenates per-row values of all participants, in the order of
        :meth:`gather_labels` (autograd-aware)."""
        ...


class ClassGeometry(NamedTuple):
    """Per-class statistics of a batch. ``C`` counts class slots.

    With the default (compact) class list every slot holds a class present in the batch. With
    ``sync_free=True`` there are ``C = B`` slots and ``valid`` marks those that hold a class.
    """

    classes: Tensor
    """Class label of each slot: ascending for the compact list; with ``sync_free``, slot i holds
    sample i's label and is ``valid`` where sample i is its class's first occurrence. Shape: (C,)."""
    inverse: Tensor
    """Slot of each local sample. Shape: (B,)."""
    counts: Tensor
    """Samples per class over everything the statistics saw (an integer tensor). Shape: (C,)."""
    valid: Tensor
    """Whether the slot holds a class (always true for the compact list). Shape: (C,)."""
    mu: Tensor
    """Centroids μ_c. Shape: (C, D)."""
    r: Tensor
    """RMS radii r_c. Shape: (C,)."""
    m: Tensor
    """Distance m_c to the nearest other centroid; ``inf`` when there is none. Shape: (C,)."""
    nearest: Tensor
    """Slot of the nearest other centroid (meaningless where ``m`` is ``inf``). Shape: (C,)."""
    degenerate: Tensor
    """Classes without spread (r_c is roundoff): one image, or copies of one. Shape: (C,)."""
    deviation: Tensor
    """z_i - μ_{y_i} of each local sample, in the compute dtype. Shape: (B, D)."""
    scale: Tensor | float
    """``mu``, ``r``, ``m`` and ``deviation`` are in units of this power of two (a 0-d tensor, or
    the float 1.0 when no rescaling was asked for): 1 unless the embeddings' magnitudes lie beyond
    2^±30. Multiply to get the embeddings' units (:meth:`unscaled`); γ, a ratio, needs none."""
    num_classes: int | Tensor
    """Classes present (valid slots): an int for the compact list, a 0-d tensor (no host sync)
    with ``sync_free``."""

    def unscaled(self, x: Tensor) -> Tensor:
        """``x`` (one of the scaled statistics) in the embeddings' units; ``inf`` where that is
        beyond the dtype's range."""
        if _is_one(self.scale):
            return x
        return x * self.scale


def log_map(z: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Log map of unit vectors ``z`` at unit vectors ``u`` (row by row): the tangent vector at u
    pointing to z, of length θ = angle(u, z), and θ itself. θ uses atan2(|sin|, cos), accurate at
    small angles where acos is not.

    Args:
        z: Unit vectors. Shape: (B, D).
        u: Unit base points. Shape: (B, D).

    Returns:
        ``(v, θ)``. Shapes: (B, D), (B,).
    """
    cos = (z * u).sum(1)
    tangent = z - cos[:, None] * u  # (B, D)
    sin = torch.linalg.vector_norm(tangent, dim=1)
    theta = torch.atan2(sin, cos)
    scale = torch.where(sin > 0, theta / torch.where(sin > 0, sin, 1.0), 1.0)  # θ/sinθ → 1 at 0
    return tangent * scale[:, None], theta


def chord_to_angle(chord: Tensor) -> Tensor:
    """Angle between unit vectors from their Euclidean distance: 2 asin(d / 2), inf stays inf."""
    half = (chord / 2).clamp(max=1.0 - 1e-7)
    return torch.where(torch.isinf(chord), chord, 2.0 * torch.asin(half))


def class_geometry(
    z: Tensor,
    y: Tensor,
    *,
    unbiased_radius: bool = False,
    sync_free: bool = False,
    reducer: StatsReducer | None = None,
    space: Space = "euclidean",
    ignore_index: int | None = None,
    rescale: bool = True,
    radius_stat: RadiusStat = "rms",
) -> ClassGeometry:
    """Centroid μ_c, RMS radius r_c and nearest-centroid distance m_c of every class in a batch.

    Formulas (``n_c`` samples of class ``c``)::

        μ_c = (1 / n_c) Σ_{y_i = c} z_i
        r_c = sqrt((1 / n_c) Σ_{y_i = c} ||z_i - μ_c||²)       (× sqrt(n_c / (n_c - 1)) if unbiased)
        m_c = min_{c' ≠ c} ||μ_c - μ_c'||

    The radius is a two-pass sum of squared deviations (no E[z²] - E[z]² cancellation) and m_c is
    a direct difference of the two centroids, so both are accurate to float32 roundoff even for
    nearly coincident classes. Embeddings beyond 2^±30 in magnitude are computed on in units of a
    power of two (``scale``), so that no square overflows. Gradients flow through all statistics
    unless the caller runs this under ``torch.no_grad()``.

    Args:
        z: Embeddings; any floating dtype, statistics are computed in float32 (float64 for
            float64 input) with autocast disabled. Shape: (B, D).
        y: Integer class labels. Shape: (B,).
        unbiased_radius: Multiply r_c by sqrt(n_c / (n_c - 1)), removing the small-sample bias of
            the RMS radius (about 13% low at K = 4). Off by default, as in the guide.
        sync_free: Use ``C = B`` class slots instead of ``torch.unique``, so that no step needs the
            host (``valid`` marks the slots in use). Costs more memory for the C × C matrix.
        reducer: Sums statistics over ranks (see :mod:`carrot.distributed`); ``None`` keeps them
            local.
        space: ``"euclidean"`` (the guide's formulas, in the ambient space) or ``"angular"``: the
            same formulas on the unit sphere. Embeddings are normalized; ``mu`` holds the mean
            direction u_c = normalize(mean of ẑ), r_c is the RMS geodesic angle to u_c, m_c the
            angle to the nearest other u_c' (radians), and ``deviation`` the log map log_u(ẑ)
            (tangent vector of length θ).
        ignore_index: A label whose slot is marked not ``valid``: it is nobody's nearest class
            and its own m_c is ``inf`` (so γ = 1 and its rows are returned unchanged).
        rescale: Compute in units of a power of two when the magnitudes lie beyond 2^±30
            (``False``: the caller guarantees they do not, e.g. unit-norm rows; ``scale`` is 1.0).
        radius_stat: ``"rms"`` (the formula above) or ``"median"``: r_c is the median of the
            members' distances ||z_i - μ_c|| (angles in angular space), the mean of the two
            middle ones for an even count. With a reducer, the median is over every rank's
            members (their distances are all-gathered: exact, differentiable).

    Returns:
        The :class:`ClassGeometry` of the batch.
    """
    check_batch(z, y)
    if space not in ("euclidean", "angular"):
        raise ValueError(f"space must be 'euclidean' or 'angular', got {space!r}.")
    if radius_stat not in ("rms", "median"):
        raise ValueError(f"radius_stat must be 'rms' or 'median', got {radius_stat!r}.")
    if radius_stat == "median" and unbiased_radius:
        raise ValueError(
            "unbiased_radius must be False with radius_stat='median' (the correction is the RMS "
            "radius's), got True."
        )
    dtype = compute_dtype(z.dtype)
    n, d = z.shape
    with no_autocast(z.device.type):
        z_c = z.to(dtype)
        if space == "angular":
            z_c = safe_normalize(z_c)
        scaled = rescale and space != "angular"  # angles need no scale
        labels, offset = y, 0
        scale: Tensor | float = 1.0
        if scaled and reducer is None and _eager_cpu(z):
            # On a CPU the largest magnitude is read back for free: most batches need no rescale.
            e = _cpu_exponent(z_c)
            if e not in (0, _NO_DATA):
                exponent = torch.tensor(e, dtype=torch.int32)
                z_c = _ldexp(z_c, -exponent)
                scale = torch.ldexp(torch.ones((), dtype=dtype), exponent.to(dtype))
        elif scaled or reducer is not None:
            # Without a rescale, the exponent only keeps the ranks' label gather in step.
            exponent = (
                _exponent(z_c.detach())
                if scaled
                else torch.zeros((), dtype=torch.int32, device=z.device)
            )
            if reducer is not None:
                labels, offset, exponent = reducer.gather_labels(y, exponent)
            exponent = torch.where(exponent == _NO_DATA, 0, exponent)
            # Reading the exponent is free on a CPU, and multiplying by 1 is a no-op.
            if scaled and not (_eager_cpu(z) and int(exponent) == 0):
                # Exact (a power of two); 1 unless the magnitudes lie beyond 2^±30.
                z_c = _ldexp(z_c, -exponent)
                scale = torch.ldexp(
                    torch.ones((), dtype=dtype, device=z.device), exponent.to(dtype)
                )
        classes, inverse_all, counts_int, valid, num_classes = _segment(
            labels, sync_free=sync_free, ignore_index=ignore_index
        )
        inverse = inverse_all[offset : offset + n] if reducer is not None else inverse_all
        c = classes.shape[0]
        counts = counts_int  # integer: the divisions below promote to the compute dtype
        # (Inductor's CPU code cannot vectorize an integer clamp: the float one, where needed.)
        denom = counts.to(dtype).clamp_min(1.0) if valid is not None else counts

        sums = torch.zeros(c, d, dtype=dtype, device=z.device).index_add_(0, inverse, z_c)
        if reducer is not None:
            sums = reducer.sum(sums)
        mu = sums / denom[:, None]  # (C, D)

        if space == "angular":
            mu = F.normalize(mu, dim=1)  # the mean direction u_c
            deviation, distance = log_map(z_c, mu.index_select(0, inverse))
        else:
            # z - μ_y, built in the gathered buffer: B×D temporaries dominate the cost on CPU.
            gathered = mu.index_select(0, inverse)
            deviation = (
                torch.sub(z_c, gathered, out=gathered) if not mu.requires_grad else z_c - gathered
            )
            distance = None
        tiny = torch.finfo(dtype).tiny
        if radius_stat == "median":
            if distance is None:
                distance = torch.linalg.vector_norm(deviation, dim=1)
            if reducer is not None:
                distance = reducer.gather(distance)  # every rank's rows, in label order
            r = _class_median(distance, inverse_all, counts)
            # With a gradient, r >= tiny keeps γ's unused branch finite for classes without spread.
            if r.requires_grad:
                r = r.clamp_min(tiny)
        else:
            if distance is not None:
                sq_rows = distance.square()
            elif deviation.requires_grad:  # differentiates in fewer kernels than a norm squared
                sq_rows = (deviation * deviation).sum(1)
            else:  # fused: no (B, D) temporary
                sq_rows = torch.linalg.vector_norm(deviation, dim=1).square_()
            sq = torch.zeros(c, dtype=dtype, device=z.device).index_add_(0, inverse, sq_rows)
            if reducer is not None:
                sq = reducer.sum(sq)
            r2 = sq / denom
            if unbiased_radius:
                r2 = r2 * denom / (counts - 1.0).clamp_min(1.0)
            # r2 >= 0. With a gradient, r >= sqrt(tiny) keeps it finite without spread.
            r = r2.clamp_min(tiny).sqrt() if r2.requires_grad else r2.sqrt_()

        with _no_grad():
            roundoff = _DEGENERATE_ULPS * torch.finfo(dtype).eps
            if space == "angular" or not rescale:  # |μ| <= 1: unit rows, or mean directions
                degenerate = r <= roundoff
            else:
                degenerate = r <= roundoff * torch.linalg.vector_norm(mu, dim=1)
            if valid is not None:
                degenerate &= valid
        m, nearest = _nearest_centroid(mu, valid)
        if space == "angular":
            m = chord_to_angle(m)
    if valid is None:
        valid = _all_valid(c, z.device)
    return ClassGeometry(
        classes,
        inverse,
        counts,
        valid,
        mu,
        r,
        m,
        nearest,
        degenerate,
        deviation,
        scale,
        num_classes,
    )
