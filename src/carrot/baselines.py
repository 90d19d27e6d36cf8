"""``nn.Module`` forms of the baselines that keep state: center loss's centres, ISDA's covariances.

Thin wrappers over :mod:`carrot.functional.baselines` and :mod:`carrot.functional.isda`: they
validate hyperparameters when built, hold the running state as buffers (in the state dict, so a
checkpoint resumes them exactly) and update it in ``forward`` while training, as BatchNorm does.
Under ``torch.distributed`` the updates see the global batch, so every rank keeps the same state.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from carrot.functional.baselines import class_center_loss, class_center_update_
from carrot.functional.isda import isda_lambda, isda_loss, isda_update_

__all__ = ["CenterLoss", "ISDALoss"]


def _check_sizes(num_classes: int, dim: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}.")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}.")


def available_memory() -> int | None:
    """Bytes of host memory a new allocation can take now (``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_isda_memory(num_classes: int, dim: int) -> None:
    """ISDA's covariances are N·D² floats: checked before they are allocated (600 classes of a
    4096-d embedding are 40 GB, which used to end in an out-of-memory kill, not a message)."""
    need = 4 * num_classes * dim * dim
    have = available_memory()
    if have is not None and need > have:
        raise ValueError(
            f"ISDA keeps one D×D covariance per class: {num_classes} classes × {dim}² × 4 bytes "
            f"= {need / 1e9:.1f} GB, more than the {have / 1e9:.1f} GB of memory available; use a "
            "smaller embedding (model.embedding_dim=512 adds a projection) or another method."
        )


class CenterLoss(nn.Module):
    """Center loss (Wen et al., ECCV 2016) with the paper's centre update.

    ``forward(x, y)`` returns L_C = ½ · mean_i ||x_i - c_{y_i}||² with the current centres and
    then, in training mode, moves them by the paper's rule with learning rate α (see
    :func:`~carrot.functional.class_center_update_`): the centres are learned by their own update, not
    by the network's optimizer, and live in the buffer ``centers`` (initially 0).

    Args:
        num_classes: N.
        dim: D, the feature dimension.
        alpha: α in [0, 1] (the paper's 0.5).
        gather_global: Update from the global batch under ``torch.distributed``.

    Example:
        >>> centre = CenterLoss(200, 512)
        >>> loss = F.cross_entropy(logits, y) + 0.003 * centre(features, y)
    """

    centers: Tensor

    def __init__(
        self, num_classes: int, dim: int, *, alpha: float = 0.5, gather_global: bool = True
    ) -> None:
        super().__init__()
        _check_sizes(num_classes, dim)
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
        self.alpha, self.gather_global = alpha, gather_global
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """L_C of the batch (then the centre update, when training).

        Args:
            features: Deep features. Shape: (B, D).
            labels: Class indices in [0, N). Shape: (B,).

        Returns:
            L_C, a 0-d float32 (float64) tensor.
        """
        # The loss reads a copy: the update below must not change what backward sees.
        loss = class_center_loss(features, labels, self.centers.clone())
        if self.training:
            class_center_update_(
                features,
                labels,
                self.centers,
                alpha=self.alpha,
                gather_global=self.gather_global,
            )
        return loss


class ISDALoss(nn.Module):
    """Implicit Semantic Data Augmentation (Wang et al., NeurIPS 2019) with its online covariances.

    ``forward(features, logits, y, weight, progress=...)`` first merges the batch's features into
    the running per-class statistics (in training mode), then returns the surrogate loss with
    λ = λ₀ · progress (see :func:`~carrot.functional.isda_loss`). The statistics are the buffers
    ``mean`` (N, D), ``covariance`` (N, D, D) and ``count`` (N,): N·D² numbers (a ResNet-50's
    2048-d features and 200 classes: 3.4 GB in float32).

    Args:
        num_classes: N.
        dim: D, the feature dimension.
        lam0: λ₀ >= 0 (the paper's 0.5).
        gather_global: Update from the global batch under ``torch.distributed``.
    """

    mean: Tensor
    covariance: Tensor
    count: Tensor

    def __init__(
        self, num_classes: int, dim: int, *, lam0: float = 0.5, gather_global: bool = True
    ) -> None:
        super().__init__()
        _check_sizes(num_classes, dim)
        if not lam0 >= 0:
            raise ValueError(f"lam0 must be >= 0, got {lam0!r}.")
        self.lam0, self.gather_global = lam0, gather_global
        _check_isda_memory(num_classes, dim)
        self.register_buffer("mean", torch.zeros(num_classes, dim))
        self.register_buffer("covariance", torch.zeros(num_classes, dim, dim))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))

    def forward(
        self, features: Tensor, logits: Tensor, labels: Tensor, weight: Tensor, *, progress: float
    ) -> Tensor:
        """The ISDA loss of the batch, after merging it into the statistics (when training).

        Args:
            features: The classifier's input a (detached for the statistics). Shape: (B, D).
            logits: W a + b. Shape: (B, N).
            labels: Class indices in [0, N). Shape: (B,).
            weight: The classifier's linear map W. Shape: (N, D).
            progress: t / T, the fraction of training done, in [0, 1].

        Returns:
            The loss, a 0-d float32 (float64) tensor.
        """
        if self.training:
            isda_update_(
                features,
                labels,
                self.mean,
                self.covariance,
                self.count,
                gather_global=self.gather_global,
            )
        lam = isda_lambda(self.lam0, progress)
        return isda_loss(logits, labels, weight, self.covariance, lam=lam)
