"""``method=supcon``: supervised contrastive learning over the batch, with a linear probe."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from carrot.functional import supcon_loss
from carrot.methods.base import LossResult, Method, MethodContext, Step, register_method
from carrot.methods.carrot import observe, observer
from carrot.settings import TEMPERATURE, WEIGHT, ranged
from carrot.tune.space import Float, space

__all__ = ["SupCon", "SupConSettings", "probe_ce"]


@dataclass(frozen=True)
class SupConSettings:
    """The ``supcon`` section (also read by supcon_carrot)."""

    temperature: float = ranged(0.1, TEMPERATURE)
    """τ of the contrastive loss."""
    gather_global: bool = True
    """Under DDP, contrast against the embeddings of all ranks."""
    probe_weight: float = ranged(1.0, WEIGHT)
    """Weight of the CE that trains the classifier on detached embeddings (for accuracy)."""


def probe_ce(z: Tensor, y: Tensor, head: nn.Module) -> Tensor:
    """CE of the classifier on detached ẑ: trains the head for accuracy without shaping z.

    Args:
        z: Raw embeddings. Shape: (B, D).
        y: Integer labels. Shape: (B,).
        head: The classifier.
    """
    return F.cross_entropy(head(F.normalize(z.detach().float(), dim=1).to(z.dtype)).float(), y)


@register_method
class SupCon(Method):
    name = "supcon"
    search_space = space({"temperature": Float(0.05, 0.5, log=True)})
    rank = 3
    label = "SupCon"
    description = "supervised contrastive loss over the batch's ẑ; the head trains on detached ẑ"
    reference = "Khosla et al., Supervised Contrastive Learning, NeurIPS 2020"
    settings_type = SupConSettings
    min_per_class = 2
    min_classes = 2
    logs = ("supcon", "probe_ce")

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.observer = observer(context)

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        s: SupConSettings = self.settings()
        probe = probe_ce(z, target, head)
        z_hat = F.normalize(z.float(), dim=1)
        contrastive = supcon_loss(
            z_hat[:, None], target, temperature=s.temperature, gather_global=s.gather_global
        )
        stats = observe(self.observer, z, target) if step.observe else {}
        loss = contrastive + s.probe_weight * probe
        return LossResult(loss, {"supcon": contrastive.detach(), "probe_ce": probe.detach()}, stats)
