"""Supervised contrastive loss (Khosla et al., 2020), the plain loss that
:func:`carrot.functional.losses.carrot_supcon_loss` feeds with CARROT's two views."""

from __future__ import annotations

import torch
from torch import Tensor

from carrot.distributed import all_gather_with_grad
from carrot.functional.numerics import _wide, check_batch, no_autocast, safe_normalize

__all__ = ["supcon_loss"]


def supcon_loss(
    features: Tensor,
    labels: Tensor,
    *,
    temperature: float = 0.1,
    gather_global: bool = False,
    ignore_index: int | None = None,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al., 2020, L_out) over V views of B samples.

    Every one of the B·V views is an anchor; its positives are all other views with the same
    label, its contrast set all other views::

        ℓ_a = -(1 / |P(a)|) Σ_{p ∈ P(a)} log( exp(s_ap / τ) / Σ_{j ≠ a} exp(s_aj / τ) )

    with s the cosine similarity (features are L2-normalized here). The loss is the mean of ℓ_a
    over anchors that have at least one positive; anchors without a positive (a label seen once
    with V = 1) carry no signal and are left out of the mean, as pytorch-metric-learning's
    ``SupConLoss`` does (SupContrast counts them as 0 in the mean instead). With no positive
    anywhere the loss is 0. When every anchor has a positive the value equals SupContrast's
    loss with ``base_temperature = temperature`` and pytorch-metric-learning's ``SupConLoss`` on
    the concatenated views.

    Args:
        features: Embeddings, V views per sample. Shape: (B, V, D).
        labels: Integer class labels. Shape: (B,).
        temperature: τ (> 0).
        gather_global: Under ``torch.distributed``, contrast the local anchors against the views
            of all ranks (an autograd-aware all-gather). Under DDP's gradient averaging, each
            rank's loss must then be a mean over the *global* anchors times the world size,
            which the plain local mean is when every rank has the same batch size.
        ignore_index: Samples with this label are neither anchors, nor positives, nor in any
            contrast set (None: every label is a class).

    Returns:
        The loss, a 0-d tensor in float32 (float64 for float64 input).
    """
    if features.ndim != 3 or not features.is_floating_point():
        raise ValueError(
            f"features must be a floating-point tensor of shape (B, V, D), got shape "
            f"{tuple(features.shape)} and dtype {features.dtype}; stack views with "
            "torch.stack([z1, z2], dim=1)."
        )
    check_batch(features[:, 0], labels)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    b, v, d = features.shape
    with no_autocast(features.device.type):
        feats = safe_normalize(_wide(features).reshape(b * v, d)).view(b, v, d)
        anchors = feats.transpose(0, 1).reshape(v * b, d)  # (V·B, D), view-major
        anchor_labels = labels.repeat(v)  # (V·B,)
        contrast, offset = anchors, 0
        contrast_labels = anchor_labels
        if gather_global:
            contrast, offset = all_gather_with_grad(anchors)
            contrast_labels, _ = all_gather_with_grad(anchor_labels)
        if v * b == 0:  # an empty batch (after the collectives above, which every rank joins)
            return anchors.sum() * 0.0
        logits = anchors @ contrast.T / temperature  # (V·B, ΣV·B)
        idx = torch.arange(v * b, device=features.device)
        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[idx, idx + offset] = True
        contrasted = ~is_self  # (V·B, ΣV·B)
        anchor_ok: Tensor | bool = True
        if ignore_index is not None:
            contrasted &= (contrast_labels != ignore_index)[None, :]
            anchor_ok = anchor_labels != ignore_index
        # A row with nothing to contrast (every other view ignored) gets finite stand-ins, so
        # that no inf - inf reaches the gradient; it is left out of the mean below.
        has_contrast = contrasted.any(1, keepdim=True)
        masked = torch.where(contrasted, logits, float("-inf"))
        masked = torch.where(has_contrast, masked, 0.0)
        shift = masked.amax(1, keepdim=True).detach()
        logits = logits - shift
        log_prob = logits - torch.logsumexp(masked - shift, 1, True)
        positive = (anchor_labels[:, None] == contrast_labels[None, :]) & contrasted
        n_pos = positive.sum(1)
        mean_log_prob_pos = torch.where(positive, log_prob, 0.0).sum(1) / n_pos.clamp_min(1)
        has_pos = (n_pos > 0) & anchor_ok
        return -(mean_log_prob_pos * has_pos).sum() / has_pos.sum().clamp_min(1)
