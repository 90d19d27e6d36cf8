"""The CARROT operator: expand every class of a batch about its centroid (see :mod:`.geometry`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from carrot.functional.geometry import (
    Space,
    chord_to_angle,
    class_geometry,
    expand_angular,
    expand_rows,
    expansion_factors,
    no_autocast,
)

if TYPE_CHECKING:
    from carrot.memory import ClassMemory

__all__ = ["carrot_operator", "summarize_stats"]


def _check_options(eps: float, max_gamma: float | None) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}.")
    if max_gamma is not None and not max_gamma >= 1:
        raise ValueError(
            f"max_gamma must be >= 1 or None (no cap), got {max_gamma!r}; γ is never below 1."
        )


def carrot_operator(
    z: Tensor,
    y: Tensor,
    *,
    eps: float = 1e-12,
    detach_stats: bool = True,
    max_gamma: float | None = None,
    unbiased_radius: bool = False,
    global_stats: bool = True,
    sync_free: bool = False,
    space: Space = "euclidean",
    memory: ClassMemory | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Applies T_c(z) = μ_c + γ_c (z - μ_c) with γ_c = max(1, m_c / (2 r_c + ε)) per class.

    Compatible with the guide's ``carrot_operator``: same arguments, same result, and a ``stats``
    dict with the same keys. It differs where the guide's code is wrong: fp16/bf16 input works
    (statistics in float32, output in the input dtype), a class without spread keeps its rows
    and reports γ = 1 (the guide reports ~1e5), m_c is accurate for close centroids, and
    ``detach_stats=False`` has a correct gradient.

    A batch with fewer than two classes is returned unchanged (the very tensor ``z``) and
    ``stats["skipped"]`` is true. Under ``torch.distributed`` with more than one rank, the
    statistics see all ranks' embeddings and each rank transforms its own, unless
    ``global_stats=False``.

    Args:
        z: Embeddings, usually L2-normalized. Shape: (B, D).
        y: Integer class labels. Shape: (B,).
        eps: ε in γ_c = max(1, m_c / (2 r_c + ε)).
        detach_stats: Treat μ_c and γ_c as constants in the backward pass (the guide's
            default; then ∂z⁺/∂z = γ_c). ``False`` differentiates through all statistics.
        max_gamma: Cap on γ_c; ``None`` (default) is the parameter-free formula.
        unbiased_radius: Use r_c · sqrt(n_c / (n_c - 1)) (see :func:`class_geometry`).
        global_stats: Under ``torch.distributed``, compute statistics over all ranks.
        sync_free: Size the class list by the batch instead of ``torch.unique`` so that the
            operator never waits for the device; the per-class stats then hold B slots and
            ``stats["valid"]`` marks the used ones.
        space: ``"euclidean"`` (the guide) or ``"angular"``: statistics and expansion on the unit
            sphere (angles instead of distances; ẑ⁺ = exp_u(γ log_u ẑ)); see
            :func:`~carrot.functional.geometry.expand_angular`.
        memory: A :class:`~carrot.memory.ClassMemory`: m_c becomes the distance to the nearest
            other class among the batch's and every class remembered from earlier batches, and
            the memory is updated with this batch's statistics (in training mode only: call
            ``memory.eval()`` to use it without updating). A batch of fewer than two classes is
            still returned unchanged.

    Returns:
        ``(z_plus, stats)``. ``z_plus`` has ``z``'s shape and dtype. ``stats`` holds detached
        tensors: ``classes``, ``gamma``, ``r``, ``m``, ``counts``, ``valid`` (shape (C,)),
        ``classes_in_batch`` (int, a 0-d tensor with ``sync_free``) and ``skipped``.
    """
    _check_options(eps, max_gamma)
    reducer = None
    if global_stats:
        from carrot.distributed import default_reducer

        reducer = default_reducer()
    with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_stats):
        geometry = class_geometry(
            z, y, unbiased_radius=unbiased_radius, sync_free=sync_free, reducer=reducer, space=space
        )
        if memory is not None:
            with no_autocast(z.device.type):
                remembered = memory.nearest(geometry.mu, geometry.classes, unit=space == "angular")
                if space == "angular":
                    remembered = chord_to_angle(remembered)
                m = torch.where(geometry.valid, torch.minimum(geometry.m, remembered), float("inf"))
            geometry = geometry._replace(m=m)
            memory.update(geometry.mu, geometry.r, geometry.classes, geometry.valid)
        gamma = expansion_factors(geometry, eps=eps, max_gamma=max_gamma)

    classes_in_batch: int | Tensor
    if sync_free:
        classes_in_batch = geometry.valid.sum()
        skipped: bool | Tensor = classes_in_batch < 2
        if memory is not None:  # a remembered class must not expand a one-class batch either
            gamma = torch.where(classes_in_batch < 2, 1.0, gamma)
    else:
        classes_in_batch = geometry.num_slots
        skipped = classes_in_batch < 2
        if skipped and memory is not None:
            gamma = torch.ones_like(gamma)
    stats: dict[str, Any] = {
        "classes": geometry.classes,
        "gamma": gamma.detach(),
        "r": geometry.r.detach(),
        "m": geometry.m.detach(),
        "counts": geometry.counts.detach(),
        "valid": geometry.valid,
        "classes_in_batch": classes_in_batch,
        "skipped": skipped,
    }
    if skipped is True:
        return z, stats
    if space == "angular":
        return expand_angular(z, geometry.inverse, geometry.mu, gamma), stats
    return expand_rows(z, geometry.deviation, gamma.index_select(0, geometry.inverse)), stats


def summarize_stats(
    stats: dict[str, Any],
    *,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    sync: bool = False,
) -> dict[str, Any]:
    """Logging summary of operator statistics: mean γ, fraction of γ > 1, r/m quantiles.

    Computed from the detached tensors without a host sync; ``sync=True`` converts the result to
    Python floats (one transfer).

    Args:
        stats: The ``stats`` dict of :func:`carrot_operator` (or of a CARROT loss).
        quantiles: Quantiles of r_c / m_c to report, each in [0, 1].
        sync: Return Python numbers instead of 0-d tensors.

    Returns:
        ``gamma_mean``, ``gamma_max``, ``gamma_frac_gt1`` (fraction of classes with γ > 1),
        ``r_mean``, ``m_mean`` (over classes with another class in the batch),
        ``r_over_m_q{q}`` for each quantile, ``classes_in_batch``.
    """
    for q in quantiles:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantiles must lie in [0, 1], got {q!r}.")
    valid = stats["valid"]
    gamma = stats["gamma"].float()
    r = stats["r"].float()
    m = stats["m"].float()
    n = valid.sum().clamp_min(1).float()
    has_m = valid & torch.isfinite(m)
    n_m = has_m.sum().clamp_min(1).float()
    ratio = torch.where(has_m, r / torch.where(has_m, m, 1.0).clamp_min(1e-30), float("nan"))
    out: dict[str, Any] = {
        "gamma_mean": torch.where(valid, gamma, 0.0).sum() / n,
        "gamma_max": torch.where(valid, gamma, 1.0).max(),
        "gamma_frac_gt1": (valid & (gamma > 1)).sum().float() / n,
        "r_mean": torch.where(valid, r, 0.0).sum() / n,
        "m_mean": torch.where(has_m, m, 0.0).sum() / n_m,
    }
    if len(quantiles):
        levels = torch.tensor(list(quantiles), dtype=ratio.dtype, device=ratio.device)
        if ratio.numel():
            values = torch.nan_to_num(torch.nanquantile(ratio, levels), nan=0.0)
        else:
            values = torch.zeros_like(levels)
        for qi, v in zip(quantiles, values, strict=True):
            out[f"r_over_m_q{round(100 * qi):02d}"] = v
    cib = stats["classes_in_batch"]
    out["classes_in_batch"] = cib if isinstance(cib, Tensor) else torch.tensor(cib)
    if sync:
        return {k: (int(v) if k == "classes_in_batch" else float(v)) for k, v in out.items()}
    return out
