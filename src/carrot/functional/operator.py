"""The CARROT operator: expand every class of a batch about its centroid (see :mod:`.geometry`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor

from carrot.distributed import default_reducer
from carrot.functional.expansion import expand_angular, expand_rows, expansion_factors
from carrot.functional.geometry import chord_to_angle, class_geometry
from carrot.functional.nearest import Remembered, remembered_distance
from carrot.functional.numerics import _eager_cpu, check_batch, no_autocast
from carrot.functional.options import _GUIDE, OperatorOptions
from carrot.functional.state import MemoryArg, read_memory, update_memory

__all__ = ["apply_operator", "carrot_operator", "exclude_nonfinite", "summarize_stats"]


def carrot_operator(
    z: Tensor,
    y: Tensor,
    eps: float | None = None,
    detach_stats: bool | None = None,
    *,
    options: OperatorOptions | None = None,
    memory: MemoryArg = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Applies T_c(z) = μ_c + γ_c (z - μ_c) with γ_c = max(1, m_c / (2 r_c + ε)) per class.

    Compatible with the guide's ``carrot_operator(z, y, eps, detach_stats)``: same arguments,
    same result, and a ``stats`` dict with the same keys. It differs where the guide's code is
    wrong: fp16/bf16 input works (statistics in float32, output in the input dtype), a class
    without spread keeps its rows and reports γ = 1 (the guide reports ~1e5), m_c is accurate for
    close centroids, ``detach_stats=False`` has a correct gradient, and any finite input gives a
    finite result (magnitudes up to float32's largest).

    A batch with fewer than two classes is returned unchanged (the very tensor ``z``; with
    ``sync_free``, an equal tensor, and ``skipped`` is a 0-d tensor) and
    ``stats["skipped"]`` is true; so is an empty batch. Rows labelled ``options.ignore_index``
    (-100, as in cross-entropy) are left out of the statistics and come back unchanged, and so are
    rows holding a NaN or an infinity (counted in ``stats["nonfinite"]``, see
    :func:`exclude_nonfinite`). Under
    ``torch.distributed`` with more than one rank, the statistics see all ranks' embeddings and
    each rank transforms its own, unless ``options.global_stats`` is false.

    Args:
        z: Embeddings, usually L2-normalized. Shape: (B, D).
        y: Integer class labels. Shape: (B,).
        eps: ε in γ_c = max(1, m_c / (2 r_c + ε)); overrides ``options.eps`` (default 1e-12).
        detach_stats: Treat μ_c and γ_c as constants in the backward pass; overrides
            ``options.detach_stats`` (default true, as in the guide).
        options: Every other option (cap on γ, unbiased radius, global statistics, sync-free
            class slots, angular space, ignored label): see :class:`OperatorOptions`.
        memory: Class centers remembered from earlier batches: m_c becomes the distance to
            the nearest other class among the batch's and the remembered ones. A
            :class:`~carrot.memory.ClassMemory` is read, then updated with the batch (in
            training mode; ``stats["memory_skipped"]`` counts the classes whose non-finite
            statistics it refused); a ``Remembered`` snapshot (``ClassMemory.remembered()``) is
            only read, and ``stats["centers"]`` holds what its owner would update it with. A
            batch of fewer than two classes is still returned unchanged.

    Returns:
        ``(z_plus, stats)``. ``z_plus`` has ``z``'s shape and dtype. ``stats`` holds detached
        tensors: ``classes``, ``gamma``, ``r``, ``m``, ``counts``, ``valid`` (shape (C,)),
        ``classes_in_batch`` (int, a 0-d tensor with ``sync_free``), ``skipped``, ``nonfinite``
        (rows left out for holding NaN or inf: a 0-d tensor, or the int 0 on a CPU when none) and, with a memory, ``centers`` (the
        batch's class centers in the embeddings' units, (C, D)).
    """
    opts = (options if options is not None else _GUIDE).with_eps_detach(eps, detach_stats)
    snapshot, owner = read_memory(memory)
    z_plus, stats = apply_operator(z, y, opts, memory=snapshot)
    return z_plus, update_memory(owner, stats)


def exclude_nonfinite(
    z: Tensor, y: Tensor, ignore_index: int | None
) -> tuple[Tensor, Tensor, int | None, Tensor | int]:
    """The non-finite contract: a row of ``z`` holding a NaN or an infinity is left out of the
    statistics exactly as an ignored label is (it joins the ignored slot, with zeros in place of
    its values so that it cannot poison the batch's sums or scale), and comes back unchanged;
    the number of such rows is ``stats["nonfinite"]``. A trainer sees the NaN in its loss and
    stops there.

    Returns ``(z_stats, y_stats, ignore_index, nonfinite)``: what the statistics see, the label
    they ignore (``ignore_index``, or the dtype's smallest integer when that is None) and the
    count: a 0-d tensor (no host sync), or the int 0 on a CPU outside torch.compile when every
    value is finite (known there for free).

    Args:
        z: Embeddings. Shape: (B, D).
        y: Labels. Shape: (B,).
        ignore_index: The ignored label, or None.
    """
    if _eager_cpu(z) and z.numel():
        # On a CPU a number is read back for free: one pass (NaN propagates through min and
        # max) tells that there is nothing to exclude, and the count is a plain 0.
        with torch.no_grad():
            lo, hi = torch.aminmax(z)
        if math.isfinite(cast(float, lo.tolist())) and math.isfinite(cast(float, hi.tolist())):
            return z, y, ignore_index, 0
    finite = torch.isfinite(z).all(dim=1)  # (B,)
    nonfinite = finite.numel() - finite.sum()
    if ignore_index is None:
        ignore_index = torch.iinfo(y.dtype).min
    elif not torch.iinfo(y.dtype).min <= ignore_index <= torch.iinfo(y.dtype).max:
        y = y.long()
    z_stats = torch.where(finite[:, None], z, torch.zeros((), dtype=z.dtype, device=z.device))
    y_stats = torch.where(finite, y, torch.full_like(y, ignore_index))
    return z_stats, y_stats, ignore_index, nonfinite


def apply_operator(
    z: Tensor,
    y: Tensor,
    opts: OperatorOptions,
    *,
    memory: Remembered | None = None,
    unit_norm: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """:func:`carrot_operator` with validated options. ``unit_norm=True`` promises rows of norm
    1 (the losses' ẑ), whose magnitudes need no rescaling: a few kernels fewer per step."""
    if memory is not None and not isinstance(memory, Remembered):
        raise ValueError(
            f"memory must be a Remembered (ClassMemory.remembered()), got {type(memory).__name__}; "
            "carrot_operator and the losses read and update a ClassMemory."
        )
    reducer = default_reducer() if opts.global_stats else None
    check_batch(z, y)
    z_stats, y_stats, ignore_index, nonfinite = exclude_nonfinite(z, y, opts.ignore_index)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not opts.detach_stats):
        geometry = class_geometry(
            z_stats,
            y_stats,
            unbiased_radius=opts.unbiased_radius,
            sync_free=opts.sync_free,
            reducer=reducer,
            space=opts.space,
            radius_stat=opts.radius_stat,
            ignore_index=ignore_index,
            rescale=not unit_norm,
        )
        if memory is not None:
            with no_autocast(z.device.type):
                # Slots without a class (unused, or the ignored label) ask about class 0; their
                # answer is discarded below.
                asked = torch.where(geometry.valid, geometry.classes, 0)
                centers = geometry.unscaled(geometry.mu)
                remembered = remembered_distance(
                    centers, asked, memory, unit=opts.space == "angular"
                )
                if opts.space == "angular":
                    remembered = chord_to_angle(remembered)
                else:
                    remembered = remembered / geometry.scale
                m = torch.where(geometry.valid, torch.minimum(geometry.m, remembered), float("inf"))
            geometry = geometry._replace(m=m)
        gamma = expansion_factors(
            geometry,
            eps=opts.eps,
            max_gamma=opts.max_gamma,
            radius_factor=opts.radius_factor,
        )

    classes_in_batch = geometry.num_classes
    skipped: bool | Tensor = classes_in_batch < 2
    if isinstance(skipped, Tensor):  # sync-free: no host sync
        if memory is not None:  # a remembered class must not expand a one-class batch either
            gamma = torch.where(skipped, 1.0, gamma)
    elif skipped and memory is not None:
        gamma = torch.ones_like(gamma)
    stats: dict[str, Any] = {
        "classes": geometry.classes,
        "gamma": _constant(gamma),
        "r": _constant(geometry.unscaled(geometry.r)),
        "m": _constant(geometry.unscaled(geometry.m)),
        "counts": geometry.counts,
        "valid": geometry.valid,
        "classes_in_batch": classes_in_batch,
        "skipped": skipped,
        "nonfinite": nonfinite,
    }
    if memory is not None:
        stats["centers"] = _constant(centers)
    if skipped is True:
        return z, stats
    if opts.space == "angular":
        return expand_angular(z, geometry.inverse, geometry.mu, gamma), stats
    gamma_rows = gamma.index_select(0, geometry.inverse)
    return expand_rows(z, geometry.deviation, gamma_rows, geometry.scale), stats


def _constant(x: Tensor) -> Tensor:
    """``x`` detached (a detach costs a little even where there is nothing to detach)."""
    return x.detach() if x.requires_grad else x


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
