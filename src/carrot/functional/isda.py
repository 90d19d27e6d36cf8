"""Implicit Semantic Data Augmentation (Wang et al., NeurIPS 2019), written from the paper.

ISDA augments each deep feature a_i of class y_i with ã ~ N(a_i, λ Σ_{y_i}), Σ_c the covariance of
class c's features, and minimizes an upper bound of the expected cross-entropy over infinitely
many such augmentations, in closed form: the CE of the logits

    z̃_ij = z_ij + (λ / 2) · (w_j - w_{y_i})ᵀ Σ_{y_i} (w_j - w_{y_i})

for a linear classifier z = W a + b. The covariances are estimated online over all the features
seen so far, merged batch by batch with the exact formula for pooled means and covariances; λ
grows linearly over training, λ = λ₀ · t / T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from carrot.distributed import all_gather_with_grad
from carrot.functional.baselines import IGNORE_INDEX, _kept, _labels
from carrot.functional.numerics import compute_dtype, no_autocast

__all__ = ["isda_lambda", "isda_logits", "isda_loss", "isda_update_"]


def isda_lambda(lam0: float, progress: float) -> float:
    """The paper's schedule λ = λ₀ · t / T, with ``progress`` = t / T in [0, 1] (clipped)."""
    if not lam0 >= 0:
        raise ValueError(f"lam0 must be >= 0, got {lam0!r}.")
    return lam0 * min(max(progress, 0.0), 1.0)


def _check_state(weight: Tensor, covariance: Tensor, logits: Tensor) -> None:
    n, d = weight.shape if weight.ndim == 2 else (-1, -1)
    if weight.ndim != 2 or n != logits.shape[1]:
        raise ValueError(
            f"weight must have shape (N, D) with N = {logits.shape[1]} (the logits' classes), "
            f"got {tuple(weight.shape)}."
        )
    if covariance.shape != (n, d, d):
        raise ValueError(
            f"covariance must have shape ({n}, {d}, {d}) to match weight, got "
            f"{tuple(covariance.shape)}."
        )


def isda_logits(
    logits: Tensor, labels: Tensor, weight: Tensor, covariance: Tensor, *, lam: float
) -> Tensor:
    """The augmented logits z̃_ij = z_ij + (λ/2) · v_ijᵀ Σ_{y_i} v_ij, v_ij = w_j - w_{y_i}.

    The term is 0 for j = y_i, so z̃ raises the other classes' logits by how far the class's
    feature spread, scaled by λ, reaches towards them. A row labelled -100 keeps its logits.

    Args:
        logits: z = W a + b of the features a. Shape: (B, N).
        labels: Class indices. Shape: (B,).
        weight: The classifier's linear map W (its gradient flows). Shape: (N, D).
        covariance: Per-class feature covariances Σ (treated as constants). Shape: (N, D, D).
        lam: λ >= 0.

    Returns:
        z̃ in float32 (float64 for float64 input). Shape: (B, N).
    """
    labels = _labels("logits", logits, labels)
    _check_state(weight, covariance, logits)
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}.")
    with no_autocast(logits.device.type):
        z = logits.to(compute_dtype(logits.dtype))
        w = weight.to(z.dtype)
        kept = labels != IGNORE_INDEX
        rows = torch.where(kept, labels, 0)
        v = w[None, :, :] - w[rows][:, None, :]  # (B, N, D)
        sigma = covariance.detach().to(z.dtype)[rows]  # (B, D, D)
        quadratic = torch.where(kept[:, None], (torch.bmm(v, sigma) * v).sum(-1), 0.0)  # (B, N)
        return z + 0.5 * lam * quadratic


def isda_loss(
    logits: Tensor, labels: Tensor, weight: Tensor, covariance: Tensor, *, lam: float
) -> Tensor:
    """The ISDA surrogate loss: the mean cross-entropy of :func:`isda_logits`.

    It bounds the expected CE over the implicit augmentations from above (Jensen's inequality
    and the Gaussian moment-generating function); λ = 0 gives plain CE.

    Args:
        logits: z = W a + b. Shape: (B, N).
        labels: Class indices. Shape: (B,).
        weight: W. Shape: (N, D).
        covariance: Σ per class. Shape: (N, D, D).
        lam: λ >= 0 (see :func:`isda_lambda`).

    Returns:
        The loss, a 0-d float32 (float64) tensor; 0 for an empty batch.
    """
    labels = _labels("logits", logits, labels)
    augmented = isda_logits(logits, labels, weight, covariance, lam=lam)
    return F.cross_entropy(augmented, labels, reduction="sum") / _kept(labels)[1]


@torch.no_grad()
def isda_update_(
    features: Tensor,
    labels: Tensor,
    mean: Tensor,
    covariance: Tensor,
    count: Tensor,
    *,
    gather_global: bool = False,
) -> None:
    """Merges a batch into the running per-class means, covariances and counts, in place.

    For class j with n_j features seen so far (mean μ_j, covariance Σ_j) and m_j in the batch
    (mean μ'_j, covariance Σ'_j, both divided by m_j), as in the paper::

        μ_j ← (n_j μ_j + m_j μ'_j) / (n_j + m_j)
        Σ_j ← (n_j Σ_j + m_j Σ'_j) / (n_j + m_j) + n_j m_j (μ_j - μ'_j)(μ_j - μ'_j)ᵀ / (n_j + m_j)²
        n_j ← n_j + m_j

    which is exactly the (biased) covariance of all the features seen. Classes absent from the
    batch are untouched. The work is per image of the batch, O(B²·D²) time and two (B, D, D)
    temporaries, not per class of the dataset; each class's row is written from its first image
    in the batch.

    Args:
        features: Deep features a (their gradient is not used). Shape: (B, D).
        labels: Class indices in [0, N) (-100: left out). Shape: (B,).
        mean: Running class means μ, updated in place. Shape: (N, D).
        covariance: Running class covariances Σ, updated in place. Shape: (N, D, D).
        count: Features seen per class n, updated in place (integer or float). Shape: (N,).
        gather_global: Under ``torch.distributed``, merge the global batch (an all-gather of
            the features and labels), so that every rank holds the same statistics.
    """
    labels = _labels("features", features, labels)
    n_cls, d = mean.shape if mean.ndim == 2 else (-1, -1)
    if mean.ndim != 2 or d != features.shape[1]:
        raise ValueError(
            f"mean must have shape (N, {features.shape[1]}) to match features, got "
            f"{tuple(mean.shape)}."
        )
    if covariance.shape != (n_cls, d, d) or count.shape != (n_cls,):
        raise ValueError(
            f"covariance and count must have shapes ({n_cls}, {d}, {d}) and ({n_cls},), got "
            f"{tuple(covariance.shape)} and {tuple(count.shape)}."
        )
    a, y = features.detach(), labels
    if gather_global:
        a, _ = all_gather_with_grad(a)  # (ΣB, D)
        y, _ = all_gather_with_grad(y)
    b = a.shape[0]
    if b == 0:
        return
    with no_autocast(a.device.type):
        dtype = torch.promote_types(compute_dtype(a.dtype), covariance.dtype)
        a = a.to(dtype)
        kept = y != IGNORE_INDEX  # (B,); no host sync, so that the update compiles in one graph
        same = (y[:, None] == y[None, :]) & kept[:, None] & kept[None, :]  # (B, B)
        same_f = same.to(dtype)
        m = same_f.sum(1)  # (B,) images of i's class in the batch (0: ignored)
        batch_mean = same_f @ a / m.clamp_min(1)[:, None]  # (B, D), μ'
        centred = a - batch_mean  # (B, D)
        outer = (centred[:, :, None] * centred[:, None, :]).reshape(b, d * d)  # (B, D²)
        # m Σ' of every image's class; the new Σ is built in place over it, so that at most two
        # (B, D, D) tensors are alive at once (1 GB each for B = 64 and D = 2048 in float32).
        new_cov = (same_f @ outer).view(b, d, d)  # (B, D, D)
        del outer
        rows = torch.where(kept, y, 0)
        seen = count[rows].to(dtype)  # (B,)
        # An ignored row computes class 0's statistics unchanged, exactly (n = 1, m = 0).
        n = torch.where(kept, seen, 1.0)
        total = n + m
        old_mean = mean[rows].to(dtype)  # (B, D)
        delta = old_mean - batch_mean
        new_mean = (n[:, None] * old_mean + m[:, None] * batch_mean) / total[:, None]
        new_cov.addcmul_(covariance[rows].to(dtype), n[:, None, None]).div_(total[:, None, None])
        shift = (n * m / total**2)[:, None, None] * delta[:, :, None]  # (B, D, 1)
        new_cov.baddbmm_(shift, delta[:, None, :])
        new_count = torch.where(kept, total, seen)
        # Every image of a class writes its class's row, all from the class's first image, so
        # that duplicate indices carry identical values (a deterministic index_copy_). An ignored
        # image writes what the batch's first kept image writes or, with none kept, class 0's
        # row unchanged.
        first = same.to(torch.uint8).argmax(1)  # (B,)
        lead = kept.to(torch.uint8).argmax(0, keepdim=True)  # (1,) the first kept image
        itself = torch.arange(b, device=y.device)
        source = torch.where(kept, first, torch.where(kept.any(), lead, itself))
        target = torch.where(kept, y, torch.where(kept.any(), y.index_select(0, lead), 0))
        mean.index_copy_(0, target, new_mean[source].to(mean.dtype))
        covariance.index_copy_(0, target, new_cov[source].to(covariance.dtype))
        count.index_copy_(0, target, new_count[source].to(count.dtype))
