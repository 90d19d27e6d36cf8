"""``method=pairwise_confusion``: CE + (λ/2)·mean Euclidean confusion of cross-class pairs."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from carrot.functional.baselines import euclidean_confusion
from carrot.methods._ce_term import CEPlusTerm
from carrot.methods.base import LossResult, MethodContext, Step, register_method
from carrot.settings import WEIGHT, ranged
from carrot.tune.space import Float, space

__all__ = ["PairwiseConfusion", "PairwiseConfusionSettings"]


@dataclass(frozen=True)
class PairwiseConfusionSettings:
    """The ``pairwise_confusion`` section."""

    lam_per_class: float = ranged(0.1, WEIGHT)
    """λ / N: the confusion weight is λ = lam_per_class × N for N classes (the authors
    recommend λ in [0.1·N, 0.2·N], e.g. 20 for CUB's 200 classes)."""


@register_method
class PairwiseConfusion(CEPlusTerm):
    name = "pairwise_confusion"
    search_space = space({"lam_per_class": Float(0.01, 1.0, log=True)})
    rank = 21
    description = "CE + (λ/2)·‖p_i − p_j‖² averaged over the batch's pairs of different classes"
    reference = "Dubey et al., Pairwise Confusion for Fine-Grained Visual Classification, ECCV 2018"
    settings_type = PairwiseConfusionSettings
    min_classes = 2
    logs = ("ce", "confusion")

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.lam = float(self.settings().lam_per_class) * context.num_classes

    def term(
        self, z: Tensor, logits: Tensor, y: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        # Pairs span all ranks: DDP then trains on what one process would on the global batch.
        confusion = euclidean_confusion(logits, y, gather_global=True)
        return LossResult(0.5 * self.lam * confusion, {"confusion": confusion.detach()}, {})
