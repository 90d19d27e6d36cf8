"""Any pytorch-metric-learning loss on the CARROT view: ``CarrotViewLoss(loss)``.

pytorch-metric-learning (PML) is an optional extra: ``pip install 'carrot-fgvc[pml]'``. This module
imports it when a :class:`CarrotViewLoss` is built, not when it is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from carrot.functional.losses import carrot_views
from carrot.functional.options import OperatorOptions, as_options
from carrot.memory import ClassMemory
from carrot.modules import KeepsStats

__all__ = ["CarrotViewLoss"]

_EXTRA = "pip install 'carrot-fgvc[pml]'"


def _import_pml() -> ModuleType:
    try:
        import pytorch_metric_learning.losses as pml_losses
    except ImportError as err:
        raise ImportError(
            "carrot.integrations.pml needs pytorch-metric-learning, which is not installed; "
            f"install it with: {_EXTRA}"
        ) from err
    return pml_losses


def _operator_options(
    options: OperatorOptions | None, keywords: dict[str, Any]
) -> OperatorOptions | None:
    """``options``, or an :class:`OperatorOptions` built from keyword options (not both)."""
    if not keywords:
        return options
    if options is not None:
        raise ValueError(
            f"pass the operator's options either as options=OperatorOptions(...) or as keywords, "
            f"not both; got options={options!r} and keywords {sorted(keywords)}."
        )
    valid = sorted(f.name for f in dataclasses.fields(OperatorOptions))
    unknown = sorted(set(keywords) - set(valid))
    if unknown:
        raise ValueError(f"unknown operator options {unknown}; valid: {valid}.")
    return OperatorOptions(**keywords)


class CarrotViewLoss(KeepsStats):
    """A pytorch-metric-learning loss applied to the embeddings and their CARROT expansion.

    ``forward(embeddings, labels)`` computes ẑ = normalize(z), ẑ⁺ = normalize(carrot_operator(ẑ, y))
    and returns ``loss(torch.cat([ẑ, ẑ⁺]), torch.cat([y, y]))``: every PML loss that takes
    ``(embeddings, labels)`` (SupCon, NTXent, MultiSimilarity, Contrastive, Triplet, ArcFace,
    ProxyAnchor, ...) sees each sample twice, once as itself and once pushed away from its class
    centroid by γ_c. With PML's ``SupConLoss`` this is :func:`carrot.functional.carrot_supcon_loss`.

    The wrapped loss (and the miner) are submodules: a loss with parameters (ArcFace's W,
    ProxyAnchor's proxies) lists them in ``.parameters()`` and moves with ``.to(device)``; give
    them their own optimizer as PML recommends. The operator's statistics of the last call are in
    ``last_stats`` (detached tensors, plus ``loss``) and :meth:`summary` summarizes them, as on
    :class:`~carrot.modules.CarrotTransform`. Under ``torch.distributed`` the statistics are
    computed over all ranks (see ``OperatorOptions.global_stats``); to contrast the views of all
    ranks too, wrap the PML loss, not this module:
    ``CarrotViewLoss(DistributedLossWrapper(loss))``.

    Rows labelled ``options.ignore_index`` (-100) are left out of the statistics (as in
    :func:`~carrot.functional.carrot_operator`) and removed from both halves before the loss,
    which would otherwise treat -100 as a class.

    Not supported: PML's ``SelfSupervisedLoss`` (it pairs views by position and ignores labels:
    wrap the loss inside it instead).

    Args:
        loss: A PML loss, or any callable ``loss(embeddings, labels, **kwargs) -> Tensor``.
        options: The operator's options (:class:`~carrot.functional.OperatorOptions`); default:
            the guide's formulas. Keyword options are accepted instead, e.g.
            ``CarrotViewLoss(loss, max_gamma=1.5)`` is ``CarrotViewLoss(loss,
            OperatorOptions(max_gamma=1.5))``.
        memory: Optional :class:`~carrot.memory.ClassMemory` for m_c (a submodule).
        miner: Optional PML miner, called as ``miner(torch.cat([ẑ, ẑ⁺]), torch.cat([y, y]))`` (with
            ``ref_emb``/``ref_labels`` when given) whenever ``forward`` gets no ``indices_tuple``.
        stop_grad_plus: Detach ẑ⁺: the expanded half is a fixed target.
        **operator_options: Fields of :class:`~carrot.functional.OperatorOptions` (not together
            with ``options``).

    Example:
        >>> from pytorch_metric_learning.losses import ProxyAnchorLoss
        >>> criterion = CarrotViewLoss(ProxyAnchorLoss(num_classes, dim), max_gamma=1.5)
        >>> loss = criterion(backbone(x), y)
        >>> criterion.summary(sync=True)["gamma_mean"]
    """

    def __init__(
        self,
        loss: Callable[..., Tensor],
        options: OperatorOptions | None = None,
        *,
        memory: ClassMemory | None = None,
        miner: Callable[..., Any] | None = None,
        stop_grad_plus: bool = False,
        **operator_options: Any,
    ) -> None:
        super().__init__()
        pml_losses = _import_pml()
        if isinstance(loss, pml_losses.SelfSupervisedLoss):
            raise ValueError(
                "loss must take (embeddings, labels), got a SelfSupervisedLoss, which pairs views "
                "by position and ignores labels; wrap its inner loss: CarrotViewLoss(NTXentLoss())."
            )
        if not callable(loss):
            raise ValueError(f"loss must be callable, got {type(loss).__name__}.")
        if miner is not None and not callable(miner):
            raise ValueError(f"miner must be callable or None, got {type(miner).__name__}.")
        if not isinstance(stop_grad_plus, bool):
            raise ValueError(f"stop_grad_plus must be True or False, got {stop_grad_plus!r}.")
        self.loss = loss
        self.miner = miner
        self.stop_grad_plus = stop_grad_plus
        self.options = as_options(_operator_options(options, operator_options))
        self.memory = memory
        self.last_stats = None

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: tuple[Tensor, ...] | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """Args:
            embeddings: Raw embeddings z (normalized here). Shape: (B, D).
            labels: Integer class labels. Shape: (B,).
            indices_tuple: PML pairs or triplets indexing the rows of the concatenation
                [ẑ; ẑ⁺] (rows 0..B-1 are ẑ, B..2B-1 are ẑ⁺). Not with ignored labels in the batch.
            ref_emb: Reference embeddings, passed to the loss unchanged. Shape: (R, D).
            ref_labels: Their labels. Shape: (R,).

        Returns:
            The wrapped loss on the concatenation. Shape: ().
        """
        memory = self.memory
        z_hat, view, stats = carrot_views(
            embeddings,
            labels,
            self.options,
            None if memory is None else memory.remembered(),
            stop_grad_plus=self.stop_grad_plus,
        )
        if memory is not None:
            stats["memory_skipped"] = memory.update_from(stats)
        both = torch.cat([z_hat, view])  # (2B, D)
        both_labels = torch.cat([labels, labels])  # (2B,)
        ignore = self.options.ignore_index
        if ignore is not None:
            kept = both_labels != ignore
            if not bool(kept.all()):  # a host sync; PML losses make many anyway
                if indices_tuple is not None:
                    raise ValueError(
                        f"indices_tuple cannot be combined with labels equal to ignore_index="
                        f"{ignore} (their rows are removed, which shifts the indices); drop those "
                        "rows before the call or pass a miner to CarrotViewLoss."
                    )
                both, both_labels = both[kept], both_labels[kept]
        if indices_tuple is None and self.miner is not None:
            refs = {"ref_emb": ref_emb, "ref_labels": ref_labels}
            indices_tuple = self.miner(
                both, both_labels, **{k: v for k, v in refs.items() if v is not None}
            )
        # Only the arguments given: PML wrappers such as CrossBatchMemory take fewer.
        extra = {"indices_tuple": indices_tuple, "ref_emb": ref_emb, "ref_labels": ref_labels}
        loss = self.loss(both, both_labels, **{k: v for k, v in extra.items() if v is not None})
        stats["loss"] = loss.detach()
        self.last_stats = stats
        return loss

    def extra_repr(self) -> str:
        return f"stop_grad_plus={self.stop_grad_plus}, options={self.options!r}"
