"""``method=maxent``: CE − γ·H(p), maximum-entropy regularization; addable as ``X+maxent``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from carrot.functional.baselines import prediction_entropy
from carrot.methods._ce_term import CEPlusTerm
from carrot.methods.base import LossResult, MethodContext, Step, register_method
from carrot.settings import WEIGHT, check_ranges, ranged

__all__ = ["MaxEnt", "MaxEntSettings"]


@dataclass
class MaxEntSettings:
    """The ``maxent`` section."""

    gamma: float = ranged(0.1, WEIGHT)
    """γ, the weight of the entropy bonus: L = CE − γ·H(p). The paper reports robustness to γ;
    0.1 is carrot's choice, not a value taken from the paper."""

    def validate(self, *, prefix: str = "") -> None:
        check_ranges(self, prefix=prefix)


@register_method
class MaxEnt(CEPlusTerm):
    name = "maxent"
    rank = 20
    description = "CE − γ·H(p): rewards high-entropy (less confident) predictions (γ = 0.1)"
    reference = "Dubey et al., Maximum-Entropy Fine-Grained Classification, NeurIPS 2018"
    settings_type = MaxEntSettings
    hard_labels = False  # the entropy term reads the predictions only
    logs = ("ce", "entropy")

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.gamma = float(self.settings().gamma)

    def term(
        self, z: Tensor, logits: Tensor, y: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        entropy = prediction_entropy(logits)
        return LossResult(-self.gamma * entropy, {"entropy": entropy.detach()}, {})
