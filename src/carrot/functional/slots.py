"""Class slots of a batch's labels and the per-slot helpers :func:`carrot.functional.geometry.class_geometry`
builds on: the slot list (compact or sync-free), each slot's nearest other centroid and median distance."""

from __future__ import annotations

import torch
from torch import Tensor

from carrot.functional.limits import pairwise_memory
from carrot.functional.nearest import nearest_reference


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
        # Sorted: a label below the smallest class (-100 under labels >= 0) is absent, one read.
        lowest = int(classes[0].tolist())
        if ignore_index < lowest:
            return classes, inverse, counts, None, n
        ignored = 1 if ignore_index == lowest else int((classes == ignore_index).sum())
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


def _nearest_centroid(mu: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """m_c and the slot of the nearest other centroid (``valid=None``: every slot is a class)."""
    blocked = None if valid is None else ~(valid[:, None] & valid[None, :])
    return nearest_reference(mu, mu, blocked, same=True)


_TRUE: dict[torch.device, Tensor] = {}


def _class_median(distance: Tensor, inverse: Tensor, counts: Tensor) -> Tensor:
    """Median of each slot's distances (the mean of the two middle ones for an even count), by
    sorting rows by distance and then, stably, by slot: no loop, no host sync, differentiable
    through the values it picks. Shape: (C,).

    Args:
        distance: Distance of each row to its class center. Shape: (N,).
        inverse: Slot of each row. Shape: (N,).
        counts: Rows per slot (0 for an unused slot). Shape: (C,).
    """
    if distance.shape[0] == 0:
        return distance.new_zeros(counts.shape)
    order = torch.argsort(distance.detach(), stable=True)
    order = order.index_select(0, torch.argsort(inverse.index_select(0, order), stable=True))
    ranked = distance.index_select(0, order)  # (N,), grouped by slot, ascending within
    start = torch.cumsum(counts, 0) - counts
    n = counts.clamp_min(1)
    last = distance.shape[0] - 1
    low = ranked.index_select(0, (start + (n - 1) // 2).clamp_max(last))
    high = ranked.index_select(0, (start + n // 2).clamp_max(last))
    return (low + high) / 2


def _all_valid(c: int, device: torch.device) -> Tensor:
    """``valid`` of a compact list without an ignored label: a read-only view of one ``True``
    (no kernel per call)."""
    true = _TRUE.get(device)
    if true is None:
        true = _TRUE[device] = torch.ones((), dtype=torch.bool, device=device)
    return true.expand(c)
