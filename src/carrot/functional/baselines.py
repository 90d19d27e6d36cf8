"""The FGVC regularizers CARROT is compared with: maximum entropy, pairwise confusion, center loss.

Each is written from its paper's formula (ISDA, the fourth, lives in :mod:`carrot.functional.isda`).
Losses are means over the local batch, in float32 (float64 for float64 input) whatever the input
dtype. Rows labelled ``IGNORE_INDEX`` (-100, cross-entropy's default) take no part: they are left
out of every term, of the means' counts and of the centre and covariance updates. Under ``torch.distributed`` the pairwise confusion can pair images across ranks and the
center update sees the global batch (``gather_global``), so that W processes compute what one
process computes on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from carrot.distributed import all_gather_with_grad
from carrot.functional.numerics import compute_dtype, no_autocast

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "check_labels",
    "class_center_loss",
    "class_center_update_",
    "euclidean_confusion",
    "maxent_loss",
    "pairwise_confusion_loss",
    "prediction_entropy",
]


def check_labels(name: str, x: Tensor, labels: Tensor) -> None:
    """Raises ``ValueError`` unless ``x`` is (B, K) floating point and ``labels`` (B,) integers on
    the same device."""
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        dtype = x.dtype if isinstance(x, Tensor) else None
        raise ValueError(
            f"{name} must be a floating-point tensor of shape (B, K), got shape {shape} and "
            f"dtype {dtype}."
        )
    if (
        not isinstance(labels, Tensor)
        or labels.shape != x.shape[:1]
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(
            f"labels must be an integer tensor of shape ({x.shape[0]},) matching {name}, got "
            f"{shape}; pass hard class indices."
        )
    if labels.device != x.device:
        raise ValueError(
            f"{name} and labels must be on the same device, got {x.device} and {labels.device}."
        )


def _labels(name: str, x: Tensor, labels: Tensor) -> Tensor:
    """``labels`` checked (:func:`check_labels`) and as int64: indexing reads a uint8 tensor as
    a mask, and cross-entropy takes no other integer type."""
    check_labels(name, x, labels)
    return labels if labels.dtype == torch.long else labels.long()


def _kept(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(kept, count)``: the rows not labelled ``IGNORE_INDEX`` (bool, (B,)) and how many, at
    least 1 (a 0-d tensor: a mean over none is 0, and there is no host sync)."""
    kept = labels != IGNORE_INDEX
    return kept, kept.sum().clamp_min(1)


def _ce(logits: Tensor, labels: Tensor, count: Tensor) -> Tensor:
    """Mean cross-entropy over the kept rows, in the compute dtype."""
    return F.cross_entropy(_wide(logits), labels, reduction="sum") / count


def _entropy_rows(logits: Tensor) -> Tensor:
    log_p = F.log_softmax(_wide(logits), dim=1)
    # p log p with p = exp(log p): finite even where p underflows to 0.
    return -(log_p.exp() * log_p).sum(1)  # (B,)


def _wide(x: Tensor) -> Tensor:
    return x.to(compute_dtype(x.dtype))


def _check_weight(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


def prediction_entropy(logits: Tensor, labels: Tensor | None = None) -> Tensor:
    """Mean Shannon entropy of the predicted distributions, H(p) = -Σ_j p_j log p_j (nats).

    The entropy term of :func:`maxent_loss` (and of ``method=maxent``), one function for both.

    Args:
        logits: Logits. Shape: (B, N).
        labels: Class indices whose -100 rows are left out of the mean, as cross-entropy leaves
            them out; None (soft targets, or no labels): every row counts. Shape: (B,).

    Returns:
        The mean over the (kept) rows, a 0-d float32 (float64) tensor; 0 for an empty batch.
    """
    if labels is not None:
        labels = _labels("logits", logits, labels)
    elif logits.ndim != 2 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a floating-point tensor of shape (B, N), got shape "
            f"{tuple(logits.shape)} and dtype {logits.dtype}."
        )
    with no_autocast(logits.device.type):
        if labels is None:
            return _entropy_rows(logits).sum() / max(logits.shape[0], 1)
        kept, count = _kept(labels)
        return torch.where(kept, _entropy_rows(logits), 0.0).sum() / count


def maxent_loss(logits: Tensor, labels: Tensor, *, gamma: float = 0.1) -> Tensor:
    """Maximum-entropy fine-grained classification (Dubey et al., NeurIPS 2018)::

        L = CE(p, y) - γ · H(p),    H(p) = -Σ_j p_j log p_j,    p = softmax(logits)

    both terms averaged over the batch: a confident (low-entropy) prediction is penalized.

    Args:
        logits: Logits. Shape: (B, N).
        labels: Class indices (-100: left out of both terms). Shape: (B,).
        gamma: γ >= 0, the weight of the entropy bonus.

    Returns:
        The loss, a 0-d float32 (float64) tensor; 0 for an empty batch.
    """
    labels = _labels("logits", logits, labels)
    _check_weight("gamma", gamma)
    entropy = prediction_entropy(logits, labels)
    with no_autocast(logits.device.type):
        return _ce(logits, labels, _kept(labels)[1]) - gamma * entropy


def euclidean_confusion(logits: Tensor, labels: Tensor, *, gather_global: bool = False) -> Tensor:
    """Mean Euclidean confusion between the predictions of two images of different classes.

    Pairwise Confusion (Dubey et al., ECCV 2018) defines the Euclidean confusion of two images as
    D_EC(i, j) = ||p_i - p_j||², p = softmax(logits), and applies it to pairs of images with
    different labels. This returns its mean over **every** ordered pair (i, j) of the batch with
    y_i ≠ y_j (0 when there is none)::

        PC = Σ_{y_i ≠ y_j} ||p_i - p_j||² / #{(i, j): y_i ≠ y_j}

    The paper pairs the first half of a batch with the second half and masks same-class pairs;
    with P×K batches that pairing depends on the order of the batch (class-grouped halves hold
    disjoint classes, a shuffled batch does not) and uses B/2 of the B(B-1)/2 pairs. The mean over
    all cross-class pairs estimates the same expectation, E[D_EC | y_i ≠ y_j], from every pair and
    does not depend on the order.

    Computed without the (B, B, N) differences: with n_i the count of i's class in the batch, m_i
    its mean prediction and p̄ the batch mean,
    Σ_{y_i ≠ y_j} ||p_i - p_j||² = 2 Σ_i [(B - n_i) ||p_i - m_i||² + B ||m_i - p̄||²],
    a sum of non-negative terms (no cancellation), in O(B² + B·N) memory.

    Args:
        logits: Logits. Shape: (B, N).
        labels: Class indices (-100: in no pair). Shape: (B,).
        gather_global: Under ``torch.distributed``, pair the local images with those of every rank
            (an autograd-aware all-gather of the probabilities): every rank computes the mean over
            the global batch's pairs, and DDP's averaged gradient equals one process's on the
            concatenated batch. Otherwise only pairs within the local batch count.

    Returns:
        PC, a 0-d float32 (float64) tensor.
    """
    labels = _labels("logits", logits, labels)
    with no_autocast(logits.device.type):
        p = F.softmax(_wide(logits), dim=1)  # (B, N)
        y = labels
        if gather_global:
            p, _ = all_gather_with_grad(p)  # (ΣB, N)
            y, _ = all_gather_with_grad(labels)
        kept = (y != IGNORE_INDEX).to(p.dtype)  # (B,); the sums below run over kept rows
        b = kept.sum()
        same = (y[:, None] == y[None, :]).to(p.dtype) * kept[:, None] * kept[None, :]  # (B, B)
        n = same.sum(1)  # (B,), 0 for an ignored row
        class_mean = same @ p / n.clamp_min(1)[:, None]  # (B, N), m_i
        batch_mean = (kept[:, None] * p).sum(0, keepdim=True) / b.clamp_min(1)  # (1, N)
        within = ((p - class_mean) ** 2).sum(1)  # (B,)
        between = ((class_mean - batch_mean) ** 2).sum(1)  # (B,)
        total = 2 * (kept * ((b - n) * within + b * between)).sum()
        pairs = b * b - n.sum()
        return torch.where(pairs > 0, total / pairs.clamp_min(1), total * 0.0)


def pairwise_confusion_loss(
    logits: Tensor, labels: Tensor, *, lam: float, gather_global: bool = False
) -> Tensor:
    """Cross-entropy with Pairwise Confusion (Dubey et al., ECCV 2018)::

        L = CE(p, y) + (λ / 2) · PC

    The paper's objective for a pair, CE(i) + CE(j) + λ·[y_i ≠ y_j]·D_EC(i, j), halved so that the
    CE term is the usual batch mean; PC is :func:`euclidean_confusion`. The authors recommend λ in
    [0.1·N, 0.2·N] for N classes.

    Args:
        logits: Logits. Shape: (B, N).
        labels: Class indices (-100: left out). Shape: (B,).
        lam: λ >= 0.
        gather_global: Pair images across ranks (see :func:`euclidean_confusion`).

    Returns:
        The loss, a 0-d float32 (float64) tensor.
    """
    labels = _labels("logits", logits, labels)
    _check_weight("lam", lam)
    with no_autocast(logits.device.type):
        ce = _ce(logits, labels, _kept(labels)[1])
        pc = euclidean_confusion(logits, labels, gather_global=gather_global)
        return ce + 0.5 * lam * pc


def class_center_loss(features: Tensor, labels: Tensor, centers: Tensor) -> Tensor:
    """Center loss (Wen et al., ECCV 2016): L_C = ½ · mean_i ||x_i - c_{y_i}||².

    The paper sums over the mini-batch as its softmax loss does; both are means here, so the
    weight λ of L = L_S + λ·L_C keeps the paper's meaning. Gradients reach ``features`` and, if it
    requires them, ``centers`` (the paper moves the centres by its own rule instead: see
    :func:`class_center_update_`).

    Args:
        features: Deep features x. Shape: (B, D).
        labels: Class indices in [0, N) (-100: left out). Shape: (B,).
        centers: Class centres c. Shape: (N, D).

    Returns:
        L_C, a 0-d float32 (float64) tensor; 0 for an empty batch.
    """
    labels = _labels("features", features, labels)
    if centers.ndim != 2 or centers.shape[1] != features.shape[1]:
        raise ValueError(
            f"centers must have shape (N, {features.shape[1]}) to match features, got "
            f"{tuple(centers.shape)}."
        )
    with no_autocast(features.device.type):
        x = _wide(features)
        kept, count = _kept(labels)
        diff = x - centers.to(x.dtype)[torch.where(kept, labels, 0)]  # (B, D)
        return 0.5 * torch.where(kept, (diff**2).sum(1), 0.0).sum() / count


@torch.no_grad()
def class_center_update_(
    features: Tensor,
    labels: Tensor,
    centers: Tensor,
    *,
    alpha: float = 0.5,
    gather_global: bool = False,
) -> None:
    """The paper's update of the centres, in place (Wen et al., ECCV 2016, Eq. 4 and Alg. 1)::

        Δc_j = Σ_i [y_i = j] (c_j - x_i) / (1 + Σ_i [y_i = j]),    c_j ← c_j - α · Δc_j

    A class absent from the batch keeps its centre. The sums are matrix products with the one-hot
    labels (deterministic, unlike scatter-adds on a GPU).

    Args:
        features: Deep features x (their gradient is not used). Shape: (B, D).
        labels: Class indices in [0, N) (-100: left out). Shape: (B,).
        centers: The centres, updated in place. Shape: (N, D).
        alpha: α in [0, 1], the centres' learning rate.
        gather_global: Under ``torch.distributed``, sum over the global batch (an all-gather of
            the features and labels), so that every rank applies the same update.
    """
    labels = _labels("features", features, labels)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
    x, y = features.detach(), labels
    if gather_global:
        x, _ = all_gather_with_grad(x)  # (ΣB, D)
        y, _ = all_gather_with_grad(y)
    with no_autocast(x.device.type):
        dtype = torch.promote_types(compute_dtype(x.dtype), centers.dtype)
        classes = torch.arange(centers.shape[0], device=y.device)
        onehot = (y[:, None] == classes).to(dtype)  # (B, N); F.one_hot would sync to check y
        counts = onehot.sum(0)  # (N,)
        sums = onehot.T @ x.to(dtype)  # (N, D)
        c = centers.to(dtype)
        delta = (counts[:, None] * c - sums) / (1 + counts[:, None])  # (N, D)
        centers.copy_(c - alpha * delta)
