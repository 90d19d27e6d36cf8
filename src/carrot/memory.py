"""A memory of every class's geometry across batches (optional, off by default), and the
operator and losses that read and update one.

In a P×K batch of P classes out of hundreds (NABirds: 16 of 555), the nearest other class *in the
batch* is rarely a class's true nearest confuser, so m_c overestimates the margin. ``ClassMemory``
keeps an exponential moving average of each class's centroid and radius in the dataset's class
space; with it, ``carrot_operator`` uses m_c = distance to the nearest centroid among the batch's
classes *and* every class seen before.

Its buffers are updated from the statistics the operator already has: under ``torch.distributed``
with global statistics (the default) those are the same on every rank, so the memories stay
identical without any extra communication. With ``global_stats=False`` each rank remembers its own.

:func:`carrot.functional.carrot_operator` and the CARROT losses take either a
:class:`ClassMemory` (read, then updated with the batch, as ``F.batch_norm`` updates the running
statistics it is given) or a read-only :class:`~carrot.functional.nearest.Remembered` snapshot;
the state lives here, as torchmetrics keeps state in modules. The names this module exported
before (``carrot_operator`` and the three losses) are those same functions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from carrot.functional.losses import (
    carrot_ce_kl_loss,
    carrot_consistency_loss,
    carrot_supcon_loss,
)
from carrot.functional.nearest import Remembered, remembered_distance
from carrot.functional.operator import carrot_operator

__all__ = [
    "ClassMemory",
    "carrot_ce_kl_loss",
    "carrot_consistency_loss",
    "carrot_operator",
    "carrot_supcon_loss",
]


class ClassMemory(nn.Module):
    """EMA of per-class centers (centroids, or mean directions in angular space) and radii.

    Args:
        num_classes: N, the dataset's class count; labels must lie in [0, N).
        dim: Embedding dimension D.
        momentum: EMA weight of the old value (0: always the latest batch).
    """

    centers: Tensor
    radii: Tensor
    seen: Tensor
    skipped: Tensor

    def __init__(self, num_classes: int, dim: int, *, momentum: float = 0.9) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}.")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim!r}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.num_classes, self.dim, self.momentum = num_classes, dim, momentum
        # One scratch row past the end absorbs writes of unused class slots.
        self.register_buffer("centers", torch.zeros(num_classes + 1, dim))
        self.register_buffer("radii", torch.zeros(num_classes + 1))
        self.register_buffer("seen", torch.zeros(num_classes + 1, dtype=torch.bool))
        # Class updates refused because their statistics were not finite (a NaN batch), in total.
        self.register_buffer("skipped", torch.zeros((), dtype=torch.long))

    # Version 2 added ``skipped``; a version-1 state dict (carrot 0.1) loads with a count of 0,
    # as BatchNorm does for ``num_batches_tracked``.
    _version = 2

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], *args: Any
    ) -> None:
        if local_metadata.get("version", 1) < 2:
            state_dict.setdefault(prefix + "skipped", torch.zeros_like(self.skipped))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def remembered(self) -> Remembered:
        """The remembered centers, as the functional operator reads them (views, no copy)."""
        return Remembered(self.centers[: self.num_classes], self.seen[: self.num_classes])

    def nearest(self, centers: Tensor, classes: Tensor, *, unit: bool = False) -> Tensor:
        """Distance from each batch class center to the nearest remembered center of another class
        (``inf`` where none has been seen yet); see
        :func:`~carrot.functional.geometry.remembered_distance`.

        Args:
            centers: The batch's class centers. Shape: (C, D).
            classes: Their labels. Shape: (C,).
            unit: Centers are directions (angular space).

        Returns:
            Euclidean (chord) distances. Shape: (C,).
        """
        return remembered_distance(centers, classes, self.remembered(), unit=unit)

    def update_from(self, stats: dict[str, Any]) -> Tensor:
        """:meth:`update` with the ``centers``, ``r``, ``classes`` and ``valid`` of an operator's
        stats (computed with this memory); returns the refused count."""
        return self.update(stats["centers"], stats["r"], stats["classes"], stats["valid"])

    @torch.no_grad()
    def update(self, centers: Tensor, radii: Tensor, classes: Tensor, valid: Tensor) -> Tensor:
        """Blend the batch's statistics into the memory (first sighting: copy). Does nothing in
        eval mode. Each call is one EMA step: an operator called twice per training step (two
        views) updates twice. A class whose center or radius is not finite (a NaN batch) is not
        updated, so that one bad batch cannot poison the memory; ``skipped`` counts them.

        Args:
            centers: Shape: (C, D).
            radii: Shape: (C,).
            classes: Shape: (C,).
            valid: Which slots hold a class. Shape: (C,).

        Returns:
            The number of this batch's classes whose update was refused (a 0-d tensor).
        """
        if not self.training:
            return torch.zeros((), dtype=torch.long, device=self.skipped.device)
        finite = torch.isfinite(centers).all(1) & torch.isfinite(radii)
        refused = (valid & ~finite).sum()
        self.skipped += refused
        valid = valid & finite
        if centers.ndim != 2 or centers.shape[1] != self.dim:
            raise ValueError(
                f"centers must have shape (C, {self.dim}), got {tuple(centers.shape)}; the memory was "
                f"built for dim={self.dim}."
            )
        torch._assert_async(
            ((~valid) | ((classes >= 0) & (classes < self.num_classes))).all(),
            f"ClassMemory: class labels must lie in [0, {self.num_classes}).",
        )
        slot = torch.where(valid, classes, self.num_classes)
        seen = self.seen.index_select(0, slot)
        keep = torch.where(seen, self.momentum, 0.0).to(self.centers.dtype)
        new_c = keep[:, None] * self.centers.index_select(0, slot) + (1 - keep)[
            :, None
        ] * centers.detach().to(self.centers.dtype)
        new_r = keep * self.radii.index_select(0, slot) + (1 - keep) * radii.detach().to(
            self.radii.dtype
        )
        self.centers.index_copy_(0, slot, new_c)
        self.radii.index_copy_(0, slot, new_r)
        self.seen.index_fill_(0, slot, True)
        self.seen[self.num_classes] = False
        return refused

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}"
