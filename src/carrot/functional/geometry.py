"""The CARROT formulas: the class geometry of a batch of embeddings and its expansion.

For every class ``c`` present in a batch of embeddings ``z_i`` with labels ``y_i``
(``n_c`` samples of class ``c``)::

    μ_c    = (1 / n_c) Σ_{y_i = c} z_i                     centroid
    r_c    = sqrt((1 / n_c) Σ_{y_i = c} ||z_i - μ_c||²)    RMS radius
    m_c    = min_{c' ≠ c} ||μ_c - μ_c'||                   distance to the nearest other centroid
    γ_c    = max(1, m_c / (2 r_c + ε))                     parameter-free expansion
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

import contextlib
import math
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from carrot.functional.limits import pairwise_memory
from carrot.functional.options import Space

__all__ = [
    "ClassGeometry",
    "Space",
    "StatsReducer",
    "chord_to_angle",
    "class_geometry",
    "compute_dtype",
    "expand",
    "expand_angular",
    "expand_rows",
    "expansion_factors",
    "log_map",
    "nearest_reference",
    "safe_normalize",
]

# How many nearest-centroid candidates, found on a Gram matrix, get their distance recomputed
# directly. The Gram matrix only ranks; the reported m_c never comes from it.
_NEAREST_CANDIDATES = 4
# A class whose RMS radius is below this many units of roundoff of its centroid's norm has no
# spread (one image, or copies of one image): its γ is 1.
_DEGENERATE_ULPS = 64
# Embeddings are rescaled (by a power of two, exactly) only when their largest magnitude lies
# outside [2^-30, 2^30]: squared norms of D <= 2^20 such values stay far inside float32's range.
_SCALE_FREE_EXPONENT = 30


class StatsReducer(Protocol):
    """Decides which samples the statistics see; implemented by :mod:`carrot.distributed`."""

    def gather_labels(self, y: Tensor, exponent: Tensor) -> tuple[Tensor, int, Tensor]:
        """Returns the labels of the whole (global) batch, the offset of the local ones in it and
        the largest of the participants' scale exponents (a 0-d integer tensor)."""
        ...

    def sum(self, x: Tensor) -> Tensor:
        """Sums a per-class partial sum over all participants (autograd-aware)."""
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
    """Samples per class over everything the statistics saw. Shape: (C,)."""
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

    @property
    def num_slots(self) -> int:
        return int(self.classes.shape[0])

    def unscaled(self, x: Tensor) -> Tensor:
        """``x`` (one of the scaled statistics) in the embeddings' units; ``inf`` where that is
        beyond the dtype's range."""
        if _is_one(self.scale):
            return x
        return x * self.scale


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are computed in: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_batch(z: Tensor, y: Tensor) -> None:
    """Raises ``ValueError`` unless ``z`` is a (B, D) float tensor and ``y`` (B,) integer labels."""
    if not isinstance(z, Tensor) or z.ndim != 2 or not z.is_floating_point():
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        dtype = z.dtype if isinstance(z, Tensor) else None
        raise ValueError(
            f"z must be a floating-point tensor of shape (B, D), got shape {shape} and dtype "
            f"{dtype}; flatten or pool your features to one vector per image first."
        )
    if (
        not isinstance(y, Tensor)
        or y.ndim != 1
        or y.is_floating_point()
        or y.is_complex()
        or y.dtype == torch.bool
    ):
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        dtype = y.dtype if isinstance(y, Tensor) else None
        raise ValueError(
            f"y must be an integer tensor of class indices with shape (B,), got shape {shape} "
            f"and dtype {dtype}; pass hard labels (soft or one-hot targets have no class geometry)."
        )
    if y.shape[0] != z.shape[0]:
        raise ValueError(
            f"z and y must hold the same number of samples, got z of shape {tuple(z.shape)} "
            f"and y of shape {tuple(y.shape)}."
        )
    if y.device != z.device:
        raise ValueError(f"z and y must be on the same device, got {z.device} and {y.device}.")


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


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with a zero (not NaN) gradient at 0."""
    if not x.requires_grad:
        return x.clamp_min(0.0).sqrt_()
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def no_autocast(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Disables autocast where it is on (entering the context costs more than checking)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


# The exponent of a batch with no data (empty, or all zeros): below any real one, so that under
# DDP an empty rank does not outvote the others' tiny embeddings; read as 0 after the max.
_NO_DATA = -(2**30)


def _exponent(x: Tensor) -> Tensor:
    """e such that ``x * 2^-e`` has its largest magnitude inside [2^-30, 2^30] (0 when it already
    has; :data:`_NO_DATA` when ``x`` is empty or all zero). A 0-d int32 tensor; no host sync on
    a GPU (on a CPU, reading a number back is free, and fewer ops are faster)."""
    if x.numel() == 0:
        return torch.full((), _NO_DATA, dtype=torch.int32, device=x.device)
    amax = torch.linalg.vector_norm(x, ord=math.inf)
    if _eager_cpu(x):
        value = float(amax)
        if value == 0.0 or not math.isfinite(value):
            return torch.tensor(_NO_DATA if value == 0.0 else 0, dtype=torch.int32)
        exp = math.frexp(value)[1]
        exp -= max(-_SCALE_FREE_EXPONENT, min(_SCALE_FREE_EXPONENT, exp))
        return torch.tensor(exp, dtype=torch.int32)
    _, e = torch.frexp(amax)
    e = e - e.clamp(-_SCALE_FREE_EXPONENT, _SCALE_FREE_EXPONENT)
    return torch.where(amax == 0, _NO_DATA, e).to(torch.int32)


def _eager_cpu(x: Tensor) -> bool:
    """On a CPU, outside torch.compile, reading a number back costs nothing: data-dependent
    shortcuts are worth taking there (a compiled graph must not branch on data)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _ldexp(x: Tensor, e: Tensor) -> Tensor:
    """x · 2^e, exact, for any e a float of x's dtype can reach: float64's 2^e itself overflows
    beyond |e| = 1023, so there it is applied in two halves."""
    if x.dtype == torch.float64:
        half = torch.div(e, 2, rounding_mode="floor")
        return torch.ldexp(torch.ldexp(x, half.to(x.dtype)), (e - half).to(x.dtype))
    return torch.ldexp(x, e.to(x.dtype))


def _exponent_range(dtype: torch.dtype) -> tuple[int, int]:
    """Exponents e with 2^-e a normal number of ``dtype`` (float32: -125..128)."""
    info = torch.finfo(dtype)
    return math.frexp(info.tiny)[1], math.frexp(info.max)[1]


def safe_normalize(x: Tensor) -> Tensor:
    """L2-normalized rows, correct for any finite input: each row is first scaled by a power of two
    (exact) so that its squared norm cannot overflow (rows beyond ~1.8e19 in float32) or
    underflow. Equal to ``F.normalize(x, dim=1)`` wherever that is finite.

    Args:
        x: Shape: (B, D).
    """
    _, e = torch.frexp(torch.linalg.vector_norm(x.detach(), ord=math.inf, dim=1, keepdim=True))
    lo, hi = _exponent_range(x.dtype)  # 2^-e must itself be representable
    return F.normalize(torch.ldexp(x, -e.clamp(lo, hi).to(x.dtype)), dim=1)


def _segment(
    y: Tensor, *, sync_free: bool, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, int | Tensor]:
    """Class slots of a label vector: ``(classes, inverse, counts, valid, num_classes)``.

    The compact list uses ``torch.unique`` (one host sync to size its output) and ``valid`` is
    ``None`` when every slot holds a class; a slot of ``ignore_index`` is marked not valid (which
    reads one number back: free on a CPU, a second small wait on a GPU). The sync-free list has
    one slot per sample: a class lives in the slot of its first occurrence, found by comparing all
    pairs of labels (B × B, no sort), so shapes never depend on the data and the whole step fuses
    into a few kernels; there ``num_classes`` is a 0-d tensor.
    """
    if not sync_free:
        classes, inverse, counts = torch.unique(
            y, sorted=True, return_inverse=True, return_counts=True
        )
        n = int(classes.shape[0])
        if ignore_index is None or n == 0:
            return classes, inverse, counts, None, n
        ignored = int((classes == ignore_index).sum())
        valid = classes != ignore_index if ignored else None
        return classes, inverse, counts, valid, n - ignored
    n = y.shape[0]
    with pairwise_memory(
        "sync_free's label comparison matrix (B × B)",
        n,
        n,
        torch.bool,
        "use a smaller batch, or sync_free=False (the compact class list) for batches this large.",
    ):
        same = y[:, None] == y[None, :]  # (B, B)
    position = torch.arange(n, device=y.device)
    inverse = torch.where(same, position[None, :], n).amin(1) if n else position  # (B,)
    first = inverse == position  # the slot of a class: its first sample
    counts = torch.where(first, same.sum(1), 0)
    valid = first & (y != ignore_index) if ignore_index is not None else first
    return y, inverse, counts, valid, valid.sum()


def nearest_reference(
    query: Tensor, refs: Tensor, blocked: Tensor | None, *, same: bool, rescale: bool = False
) -> tuple[Tensor, Tensor]:
    """Distance from every query row to the nearest reference row that is not blocked, and its index.

    Candidates are ranked on the Gram matrix of the centered vectors (fast, but |a|²+|b|²-2a·b
    cancels when two vectors are close), then the distance to each of the best few is recomputed
    as a direct difference, which is accurate and carries the gradient of ``query`` (references are
    constants here unless they are the query itself). A row without an allowed reference gets
    ``inf``.

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
    with torch.no_grad():
        center = query.mean(0)
        q = query - center
        ref = q if same else refs.to(query.dtype) - center
        q_sq = torch.linalg.vector_norm(q, dim=1).square_()
        r_sq = q_sq if same else torch.linalg.vector_norm(ref, dim=1).square_()
        with pairwise_memory(
            "the matrix of distances between class centroids (C classes in the batch × R "
            "references)",
            c,
            r,
            query.dtype,
            "C is the number of classes in one batch (or the batch size with sync_free). Use "
            "fewer classes per batch (a P×K sampler with a smaller P) or a smaller batch.",
        ):
            d2 = torch.addmm(q_sq[:, None] + r_sq, q, ref.T, alpha=-2.0)  # (C, R)
        if same:
            d2.fill_diagonal_(float("inf"))
        if blocked is not None:
            d2.masked_fill_(blocked, float("inf"))
        ranked, candidates = d2.topk(k, dim=1, largest=False)  # (C, k)
        chosen = refs.detach().to(query.dtype).index_select(0, candidates.view(-1)).view(c, k, d)
        exact = torch.linalg.vector_norm(chosen.sub_(query.detach()[:, None]), dim=2)  # (C, k)
        if blocked is not None:
            exact.masked_fill_(torch.isinf(ranked), float("inf"))
        best, pick = exact.min(dim=1)
        nearest = candidates.gather(1, pick[:, None]).squeeze(1)  # (C,)
    if not query.requires_grad:
        return best, nearest
    other = (
        refs.index_select(0, nearest)
        if same
        else refs.detach().to(query.dtype).index_select(0, nearest)
    )
    m = torch.linalg.vector_norm(query - other, dim=1)
    return (m if blocked is None else torch.where(torch.isfinite(best), m, best)), nearest


def _nearest_centroid(mu: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """m_c and the slot of the nearest other centroid (``valid=None``: every slot is a class)."""
    blocked = None if valid is None else ~(valid[:, None] & valid[None, :])
    return nearest_reference(mu, mu, blocked, same=True)


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

    Returns:
        The :class:`ClassGeometry` of the batch.
    """
    check_batch(z, y)
    if space not in ("euclidean", "angular"):
        raise ValueError(f"space must be 'euclidean' or 'angular', got {space!r}.")
    dtype = compute_dtype(z.dtype)
    n, d = z.shape
    with no_autocast(z.device.type):
        z_c = z.to(dtype)
        if space == "angular":
            z_c = safe_normalize(z_c)
        scaled = rescale and space != "angular"  # angles need no scale
        labels, offset = y, 0
        scale: Tensor | float = 1.0
        if scaled or reducer is not None:
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
        counts = counts_int.to(dtype)
        denom = counts.clamp_min(1.0) if valid is not None else counts

        sums = torch.zeros(c, d, dtype=dtype, device=z.device).index_add_(0, inverse, z_c)
        if reducer is not None:
            sums = reducer.sum(sums)
        mu = sums / denom[:, None]  # (C, D)

        if space == "angular":
            mu = F.normalize(mu, dim=1)  # the mean direction u_c
            deviation, theta = log_map(z_c, mu.index_select(0, inverse))
            sq_rows = theta.square()
        else:
            # z - μ_y, built in the gathered buffer: B×D temporaries dominate the cost on CPU.
            gathered = mu.index_select(0, inverse)
            deviation = (
                torch.sub(z_c, gathered, out=gathered) if not mu.requires_grad else z_c - gathered
            )
            sq_rows = torch.linalg.vector_norm(deviation, dim=1).square()
        sq = torch.zeros(c, dtype=dtype, device=z.device).index_add_(0, inverse, sq_rows)
        if reducer is not None:
            sq = reducer.sum(sq)
        r2 = sq / denom
        if unbiased_radius:
            r2 = r2 * denom / (counts - 1.0).clamp_min(1.0)
        r = _safe_sqrt(r2)

        with torch.no_grad():
            roundoff = _DEGENERATE_ULPS * torch.finfo(dtype).eps
            degenerate = r <= roundoff * torch.linalg.vector_norm(mu, dim=1)
            if valid is not None:
                degenerate &= valid
        m, nearest = _nearest_centroid(mu, valid)
        if space == "angular":
            m = chord_to_angle(m)
    if valid is None:
        valid = torch.ones(c, dtype=torch.bool, device=z.device)
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


def expansion_factors(
    geometry: ClassGeometry, *, eps: float = 1e-12, max_gamma: float | None = None
) -> Tensor:
    """The parameter-free expansion γ_c = max(1, m_c / (2 r_c + ε)), optionally capped.

    γ_c is 1 for classes without spread (r_c is roundoff: expanding them would only scale
    roundoff by ~1e5), without another class in the batch (m_c = inf) and for unused slots.

    Args:
        geometry: Statistics from :func:`class_geometry`.
        eps: ε of the formula, in the embeddings' units.
        max_gamma: Upper bound on γ_c (``None``: no bound, the guide's formula).

    Returns:
        γ_c. Shape: (C,).
    """
    m, r = geometry.m, geometry.r
    # m and r are in units of geometry.scale (often the float 1.0). A true division: eps / scale
    # with a Python float multiplies by 1/scale, which overflows for scale = 2^-1024.
    scale = geometry.scale
    eps_scaled: float | Tensor = eps
    if isinstance(scale, Tensor):
        eps_scaled = torch.full_like(scale, eps) / scale
    elif scale != 1.0:
        eps_scaled = eps / scale
    # Where γ is forced to 1, m and r are replaced first so that where() does not turn an
    # inf or 0/0 in the unused branch into a NaN gradient.
    inactive = geometry.degenerate | (m == float("inf"))
    if m.requires_grad or r.requires_grad:
        m = torch.where(inactive, 0.0, m)
        r = torch.where(inactive, 1.0, r)
        gamma = torch.where(inactive, 1.0, (m / (2.0 * r + eps_scaled)).clamp_min(1.0))
    else:
        gamma = m.div(r.mul(2.0).add_(eps_scaled)).clamp_min_(1.0).masked_fill_(inactive, 1.0)
    if max_gamma is not None:
        gamma = gamma.clamp_max(max_gamma)
    return gamma


def _coefficient(gamma_rows: Tensor, scale: Tensor | float) -> Tensor:
    """(γ - 1) · scale per row, as a column. Shape: (B, 1)."""
    coef = gamma_rows - 1.0
    if not _is_one(scale):
        coef = coef * scale
    return coef[:, None]


class _FrozenExpansion(torch.autograd.Function):
    """z + (γ - 1)·s·(z - μ)/s with μ and γ constants: the backward pass is a row scaling by γ.

    Writes the result into ``deviation`` (an internal buffer), so the step costs no new B×D
    tensor in the forward pass.
    """

    @staticmethod
    def forward(
        ctx: Any, z: Tensor, deviation: Tensor, gamma_rows: Tensor, scale: Tensor | float
    ) -> Tensor:
        ctx.save_for_backward(gamma_rows)
        out = torch.addcmul(
            z.to(deviation.dtype), deviation, _coefficient(gamma_rows, scale), out=deviation
        )
        return _to_input_dtype(out, z.dtype, rescaled=not _is_one(scale))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (gamma_rows,) = ctx.saved_tensors
        return (grad.to(gamma_rows.dtype) * gamma_rows[:, None]).to(grad.dtype), None, None, None


def _to_input_dtype(x: Tensor, dtype: torch.dtype, *, rescaled: bool = True) -> Tensor:
    """Cast to the input dtype, saturating at its largest finite value instead of inf (a finite
    input whose expansion lies beyond the dtype's range comes back finite). In the same dtype,
    only an expansion computed in rescaled units can exceed the range: below 2^30 it cannot."""
    big = torch.finfo(dtype).max
    if x.dtype == dtype:
        if not rescaled:
            return x
        return x.clamp(-big, big) if x.requires_grad else x.clamp_(-big, big)
    return x.clamp_(-big, big).to(dtype)


def _is_one(scale: Tensor | float) -> bool:
    return isinstance(scale, float) and scale == 1.0


def expand_rows(
    z: Tensor, deviation: Tensor, gamma_rows: Tensor, scale: Tensor | float = 1.0
) -> Tensor:
    """z⁺ = z + (γ - 1)(z - μ) from precomputed deviations ``z - μ`` (see :func:`expand`).

    When neither ``deviation`` nor ``gamma_rows`` needs a gradient (detached statistics), the
    result is written into ``deviation``, which must not be used afterwards.

    Args:
        z: Embeddings. Shape: (B, D).
        deviation: z - μ_{y} in the compute dtype, in units of ``scale``. Shape: (B, D).
        gamma_rows: γ of each sample's class. Shape: (B,).
        scale: Units of ``deviation`` (see :class:`ClassGeometry`).

    Returns:
        z⁺ in ``z``'s dtype. Shape: (B, D).
    """
    with no_autocast(z.device.type):
        if not (deviation.requires_grad or gamma_rows.requires_grad):
            out: Tensor = _FrozenExpansion.apply(z, deviation, gamma_rows, scale)
            return out
        z_plus = torch.addcmul(z.to(deviation.dtype), _coefficient(gamma_rows, scale), deviation)
        return _to_input_dtype(z_plus, z.dtype)


def expand_angular(z: Tensor, inverse: Tensor, u: Tensor, gamma: Tensor) -> Tensor:
    """T_c on the unit sphere: ẑ⁺ = exp_u(γ_c · log_u(ẑ)), i.e. the angle to the mean direction
    u_c is multiplied by γ_c (capped at π) along the same great circle. Rows of classes with
    γ_c = 1 are returned unchanged; the others are unit vectors.

    Args:
        z: Embeddings (normalized here). Shape: (B, D).
        inverse: Class slot of each sample. Shape: (B,).
        u: Mean directions of the classes (unit). Shape: (C, D).
        gamma: Expansion factors. Shape: (C,).

    Returns:
        ẑ⁺ in ``z``'s dtype. Shape: (B, D).
    """
    with no_autocast(z.device.type):
        z_hat = safe_normalize(z.to(u.dtype))
        u_rows = u.index_select(0, inverse)
        g = gamma.index_select(0, inverse)
        v, theta = log_map(z_hat, u_rows)
        phi = (g * theta).clamp(max=math.pi)
        direction = v / torch.where(theta > 0, theta, 1.0)[:, None]  # unit tangent (0 at θ = 0)
        out = torch.cos(phi)[:, None] * u_rows + torch.sin(phi)[:, None] * direction
        out = torch.where((g == 1.0)[:, None], z.to(u.dtype), out)
        return _to_input_dtype(out, z.dtype, rescaled=False)  # unit vectors


def expand(z: Tensor, inverse: Tensor, mu: Tensor, gamma: Tensor) -> Tensor:
    """T_c(z) = μ_c + γ_c (z - μ_c), written as z + (γ_c - 1)(z - μ_c) so that γ_c = 1 returns z
    bit for bit.

    Computed in ``mu``'s dtype; the result has ``z``'s dtype, saturated at its largest finite
    value when that dtype is narrower (a finite input never comes back as inf).

    Args:
        z: Embeddings. Shape: (B, D).
        inverse: Class slot of each sample. Shape: (B,).
        mu: Centroids. Shape: (C, D).
        gamma: Expansion factors. Shape: (C,).

    Returns:
        The expanded embeddings z⁺. Shape: (B, D).
    """
    with no_autocast(z.device.type):
        deviation = z.to(mu.dtype) - mu.index_select(0, inverse)  # (B, D)
        return expand_rows(z, deviation, gamma.index_select(0, inverse))
