"""Losses built on the CARROT operator: CE + KL logit consistency, and supervised contrastive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from carrot.functional.nearest import Remembered
from carrot.functional.numerics import _wide, check_batch, no_autocast, safe_normalize
from carrot.functional.operator import apply_operator
from carrot.functional.options import (
    _GUIDE,
    _GUIDE_LOSS,
    _KL_DIRECTIONS,
    CEKLOptions,
    KLDirection,
    OperatorOptions,
)
from carrot.functional.state import MemoryArg, read_memory, update_memory
from carrot.functional.supcon import supcon_loss

__all__ = [
    "KLDirection",
    "carrot_ce_kl_loss",
    "carrot_consistency_loss",
    "carrot_supcon_loss",
    "carrot_views",
    "kl_consistency",
    "supcon_loss",
]


def _normalize(z: Tensor) -> Tensor:
    """L2-normalize rows in float32 or wider, overflow-safe (see ``safe_normalize``); ``z``'s dtype."""
    with no_autocast(z.device.type):
        return safe_normalize(_wide(z)).to(z.dtype)


def _renormalize(z_plus: Tensor) -> Tensor:
    """L2-normalize the expansion of unit rows: its magnitudes are bounded (|z⁺| is at most a few
    times γ), so the plain normalization cannot overflow; ``z_plus``'s dtype."""
    with no_autocast(z_plus.device.type):
        return F.normalize(_wide(z_plus), dim=1).to(z_plus.dtype)


def carrot_views(
    z: Tensor,
    y: Tensor,
    opts: OperatorOptions,
    memory: Remembered | None,
    *,
    stop_grad_plus: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """ẑ = normalize(z) and ẑ⁺ = normalize(carrot_operator(ẑ, y)) (detached with
    ``stop_grad_plus``), and the operator's stats: the two views of the contrastive losses.

    Args:
        z: Raw embeddings. Shape: (B, D).
        y: Integer class labels. Shape: (B,).
        opts: The operator's options.
        memory: Remembered class centers for m_c, read only (see carrot_operator).
        stop_grad_plus: Detach ẑ⁺.

    Returns:
        ``(ẑ, ẑ⁺, stats)``. Shapes: (B, D), (B, D).
    """
    check_batch(z, y)
    z_hat = _normalize(z)
    z_plus, stats = apply_operator(z_hat, y, opts, memory=memory, unit_norm=True)
    # A skipped batch (fewer than two classes) keeps ẑ itself: normalizing it again is not
    # bit-exact, and the consistency terms are then exactly 0. (Sync-free, the skip is a tensor:
    # a select there would cost a kernel per step for a term of ~1e-7.)
    view = z_hat if stats["skipped"] is True else _renormalize(z_plus)
    return z_hat, (view.detach() if stop_grad_plus else view), stats


def _kept(
    y: Tensor, ignore_index: int | None, stats: dict[str, Any]
) -> tuple[Tensor | None, Tensor | int]:
    """Rows that count (None: all of them) and how many, at least 1 (no host sync). The
    operator's compact class list already tells whether the ignored label occurs: then every
    slot is a class (``classes_in_batch`` is an int equal to the number of slots)."""
    present = stats["classes_in_batch"]
    if ignore_index is None or (isinstance(present, int) and present == stats["classes"].shape[0]):
        return None, max(y.shape[0], 1)
    kept = y != ignore_index
    return kept, kept.sum().clamp_min(1)


def _kl_sum(log_p: Tensor, log_q: Tensor, direction: str, kept: Tensor | None) -> Tensor:
    """Σ over the kept rows of KL in ``direction`` (see :func:`kl_consistency`) from the
    log-probabilities of z and z⁺. An ignored row gets the same distribution on both sides, which
    makes its term and its gradient exactly zero without a masked reduction."""

    def kl(log_target: Tensor, log_input: Tensor) -> Tensor:
        if kept is not None:
            log_target = torch.where(kept[:, None], log_target, log_input)
        return F.kl_div(log_input, log_target, reduction="sum", log_target=True)

    if direction == "plus_z":
        return kl(log_q, log_p)
    if direction == "z_plus":
        return kl(log_p, log_q)
    return 0.5 * (kl(log_q, log_p) + kl(log_p, log_q))


def kl_consistency(
    logits: Tensor,
    logits_plus: Tensor,
    *,
    T: float = 1.0,
    direction: KLDirection = "plus_z",
    stop_grad_plus: bool = False,
    weight: Tensor | None = None,
) -> Tensor:
    """Temperature-scaled KL divergence between the class distributions of z and z⁺, times T².

    With p = softmax(logits / T) and p⁺ = softmax(logits_plus / T), averaged over the batch:

    - ``"plus_z"``: KL(p⁺ ‖ p) = Σ p⁺ (log p⁺ - log p). This is what the guide's code computes,
      ``F.kl_div(log p, p⁺)`` (its comment says KL(p ‖ p⁺)). Default.
    - ``"z_plus"``: KL(p ‖ p⁺), the direction the guide's comment names.
    - ``"symmetric"``: ½ (KL(p⁺ ‖ p) + KL(p ‖ p⁺)).

    Args:
        logits: Logits of z. Shape: (B, N).
        logits_plus: Logits of z⁺. Shape: (B, N).
        T: Temperature (> 0).
        direction: One of the three above.
        stop_grad_plus: Detach p⁺, making it a fixed target (the guide lets gradients flow
            through both).
        weight: Average over the rows where this is true instead of over all B (an empty
            selection gives 0). Shape: (B,).

    Returns:
        The loss, a 0-d tensor in float32 (float64 for float64 input).
    """
    if direction not in _KL_DIRECTIONS:
        raise ValueError(f"kl_direction must be one of {_KL_DIRECTIONS}, got {direction!r}.")
    if not T > 0:
        raise ValueError(f"T must be > 0, got {T!r}.")
    log_p = F.log_softmax(_wide(logits) / T, dim=1)
    log_q = F.log_softmax(_wide(logits_plus) / T, dim=1)
    if stop_grad_plus:
        log_q = log_q.detach()

    def kl(log_target: Tensor, log_input: Tensor) -> Tensor:
        if weight is None:
            if log_input.shape[0] == 0:
                return log_input.sum() * 0.0
            return F.kl_div(log_input, log_target, reduction="batchmean", log_target=True)
        rows = F.kl_div(log_input, log_target, reduction="none", log_target=True).sum(1)
        return torch.where(weight, rows, 0.0).sum() / weight.sum().clamp_min(1)

    kl_qp = kl(log_q, log_p)
    if direction == "plus_z":
        out = kl_qp
    else:
        kl_pq = kl(log_p, log_q)
        out = kl_pq if direction == "z_plus" else 0.5 * (kl_qp + kl_pq)
    return out * (T * T)


def _loss_options(loss_options: CEKLOptions | None, given: dict[str, Any]) -> CEKLOptions:
    """``loss_options`` (default: the guide's) with the hyperparameters given as keywords."""
    base = loss_options if loss_options is not None else _GUIDE_LOSS
    changes = {k: v for k, v in given.items() if v is not None}
    if changes:
        return base.replace(**changes)
    return base


def carrot_ce_kl_loss(
    z: Tensor,
    y: Tensor,
    classifier: Callable[[Tensor], Tensor],
    *,
    logits: Tensor | None = None,
    T: float | None = None,
    lam: float | None = None,
    kl_direction: KLDirection | None = None,
    aux_ce_weight: float | None = None,
    stop_grad_plus: bool | None = None,
    label_smoothing: float | None = None,
    loss_options: CEKLOptions | None = None,
    options: OperatorOptions | None = None,
    memory: MemoryArg = None,
) -> tuple[Tensor, dict[str, Any]]:
    """CARROT regularization: CE(classifier(ẑ), y) + λ · T² · KL between ẑ and ẑ⁺, plus an
    optional auxiliary CE on ẑ⁺.

    ẑ = normalize(z), z⁺ = carrot_operator(ẑ, y), ẑ⁺ = normalize(z⁺); the two logit vectors are
    ``classifier(ẑ)`` and ``classifier(ẑ⁺)``. With default options this is the guide's
    ``carrot_ce_kl_loss`` with an identity encoder, value and gradients.

    Rows labelled ``options.ignore_index`` (-100) are left out of every term (the means run over
    the other rows); an empty batch, or one where every row is ignored, gives a loss of 0 with a
    zero gradient.

    Args:
        z: Raw (un-normalized) embeddings. Shape: (B, D).
        y: Integer class labels. Shape: (B,).
        classifier: Any head mapping (B, D) embeddings to (B, N) logits; called on ẑ⁺, and on
            ẑ unless ``logits`` are given.
        logits: ``classifier(normalize(z))`` if the caller already has them (saves a call).
            Shape: (B, N).
        T, lam, kl_direction, aux_ce_weight, stop_grad_plus, label_smoothing: The loss's
            hyperparameters, documented (with their defaults, the guide's recipe) on
            :class:`CEKLOptions`; each one given here replaces that of ``loss_options``.
        loss_options: All of them at once (default: ``CEKLOptions()``).
        options: The operator's options (cap on γ, ε, statistics...): see
            :class:`OperatorOptions`; default: the guide's formulas.
        memory: A ClassMemory (read, then updated) or a Remembered (read only): see the operator.

    Returns:
        ``(loss, stats)``: a 0-d float32 (float64) loss (mean over the local batch) and the operator's
        stats plus detached ``ce``, ``kl``, ``aux_ce`` and ``logits`` (of ẑ, for accuracy).
    """
    check_batch(z, y)
    lo = _loss_options(
        loss_options,
        dict(
            T=T,
            lam=lam,
            kl_direction=kl_direction,
            aux_ce_weight=aux_ce_weight,
            stop_grad_plus=stop_grad_plus,
            label_smoothing=label_smoothing,
        ),
    )
    T, lam, kl_direction, aux_ce_weight = lo.T, lo.lam, lo.kl_direction, lo.aux_ce_weight
    stop_grad_plus, label_smoothing = lo.stop_grad_plus, lo.label_smoothing
    opts = options if options is not None else _GUIDE
    snapshot, owner = read_memory(memory)
    z_hat, z_plus, stats = carrot_views(z, y, opts, snapshot)
    if logits is None:
        logits = classifier(z_hat)
    logits_plus = classifier(z_plus)
    kept, count = _kept(y, opts.ignore_index, stats)
    ignore = -100 if opts.ignore_index is None else opts.ignore_index
    wide, wide_plus = _wide(logits), _wide(logits_plus)
    # Every branch below is chosen by a hyperparameter, never by data: at the guide's T = 1,
    # λ = 1 and no smoothing, CE and KL share one log-softmax per view and nothing is rescaled.
    tempered = T != 1.0
    log_p = F.log_softmax(wide / T if tempered else wide, dim=1)
    log_q = F.log_softmax(wide_plus / T if tempered else wide_plus, dim=1)

    def cross_entropy(raw: Tensor, log_probs: Tensor) -> Tensor:
        if tempered or label_smoothing:
            total = F.cross_entropy(
                raw, y, reduction="sum", label_smoothing=label_smoothing, ignore_index=ignore
            )
        else:
            total = F.nll_loss(log_probs, y, reduction="sum", ignore_index=ignore)
        return total / count

    ce = cross_entropy(wide, log_p)
    kl = _kl_sum(log_p, log_q.detach() if stop_grad_plus else log_q, kl_direction, kept) / count
    if tempered:
        kl = kl * (T * T)
    loss = ce + (kl if lam == 1.0 else lam * kl)
    aux = torch.zeros((), device=z.device)
    if aux_ce_weight > 0:
        aux = cross_entropy(wide_plus, log_q)
        loss = loss + aux_ce_weight * aux
    stats.update(ce=ce.detach(), kl=kl.detach(), aux_ce=aux.detach(), logits=logits.detach())
    return loss, update_memory(owner, stats)


def carrot_consistency_loss(
    z: Tensor,
    y: Tensor,
    classifier: Callable[[Tensor], Tensor],
    *,
    logits: Tensor | None = None,
    loss_options: CEKLOptions | None = None,
    options: OperatorOptions | None = None,
    memory: MemoryArg = None,
) -> tuple[Tensor, dict[str, Any]]:
    """CARROT's term alone, to add to any other objective: λ · T² · KL(ẑ, ẑ⁺) (+ the auxiliary
    CE on ẑ⁺): :func:`carrot_ce_kl_loss` without its CE on ẑ. Ignored rows are left out.

    Args:
        z: Raw embeddings. Shape: (B, D).
        y: Integer class labels (one per image). Shape: (B,).
        classifier: Head mapping embeddings to logits. Shape: (B, D) -> (B, N).
        logits: ``classifier(normalize(z))`` if the caller has them. Shape: (B, N).
        loss_options: λ, T, direction... (:class:`CEKLOptions`; default: the guide's).
        options: The operator's options (:class:`OperatorOptions`).
        memory: A ClassMemory (read, then updated) or a Remembered (read only): see the operator.

    Returns:
        ``(loss, stats)``: the 0-d term and the operator's stats plus detached ``kl``, ``aux_ce``.
    """
    check_batch(z, y)
    lo = _loss_options(loss_options, {})
    opts = options if options is not None else _GUIDE
    snapshot, owner = read_memory(memory)
    z_hat, z_plus, stats = carrot_views(z, y, opts, snapshot)
    if logits is None:
        logits = classifier(z_hat)
    logits_plus = classifier(z_plus)
    kept, count = _kept(y, opts.ignore_index, stats)
    kl = kl_consistency(
        logits,
        logits_plus,
        T=lo.T,
        direction=lo.kl_direction,
        stop_grad_plus=lo.stop_grad_plus,
        weight=kept,
    )
    loss = lo.lam * kl
    aux = torch.zeros((), device=z.device)
    if lo.aux_ce_weight > 0:
        ignore = -100 if opts.ignore_index is None else opts.ignore_index
        total = F.cross_entropy(
            _wide(logits_plus),
            y,
            reduction="sum",
            label_smoothing=lo.label_smoothing,
            ignore_index=ignore,
        )
        aux = total / count
        loss = loss + lo.aux_ce_weight * aux
    stats.update(kl=kl.detach(), aux_ce=aux.detach())
    return loss, update_memory(owner, stats)


def carrot_supcon_loss(
    z: Tensor,
    y: Tensor,
    *,
    temperature: float = 0.1,
    gather_global: bool = False,
    stop_grad_plus: bool = False,
    options: OperatorOptions | None = None,
    memory: MemoryArg = None,
) -> tuple[Tensor, dict[str, Any]]:
    """SupCon with CARROT: ẑ = normalize(z) and ẑ⁺ = normalize(carrot_operator(ẑ, y)) as the
    two views of :func:`supcon_loss`.

    Args:
        z: Raw embeddings. Shape: (B, D).
        y: Integer class labels. Shape: (B,).
        temperature: τ of the contrastive loss (> 0).
        gather_global: Contrast against all ranks' views (see :func:`supcon_loss`).
        stop_grad_plus: Detach the expanded view: z⁺ is a fixed target and the loss gradient
            reaches z only through its own view (not multiplied by γ through z⁺).
        options: The operator's options: see :class:`OperatorOptions`; default: the guide's.
        memory: A ClassMemory (read, then updated) or a Remembered (read only): see the operator.

    Returns:
        ``(loss, stats)``: the 0-d loss and the operator's stats plus a detached ``supcon``.
    """
    opts = options if options is not None else _GUIDE
    snapshot, owner = read_memory(memory)
    z_hat, view, stats = carrot_views(z, y, opts, snapshot, stop_grad_plus=stop_grad_plus)
    features = torch.stack([z_hat, view], dim=1)  # (B, 2, D)
    loss = supcon_loss(
        features,
        y,
        temperature=temperature,
        gather_global=gather_global,
        ignore_index=opts.ignore_index,
    )
    stats.update(supcon=loss.detach())
    return loss, update_memory(owner, stats)
