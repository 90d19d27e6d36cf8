"""``method=maxent``: CE − γ·H(p), maximum-entropy regularization; addable as ``X+maxent``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from carrot.functional.baselines import prediction_entropy
from carrot.methods._ce_term import CEPlusTerm
from carrot.methods.base import LossResult, MethodContext, Step, register_method
from carrot.settings import WEIGHT, ranged
from carrot.tune.space import Float, space

__all__ = ["MaxEnt", "MaxEntSettings"]


@dataclass(frozen=True)
class MaxEntSettings:
    """The ``maxent`` section."""

    gamma: float = ranged(0.1, WEIGHT)
    """γ, the weight of the entropy bonus: L = CE − γ·H(p). The paper reports robustness to γ;
    0.1 is carrot's choice, not a value taken from the paper."""


@register_method
class MaxEnt(CEPlusTerm):
    name = "maxent"
    search_space = space({"gamma": Float(0.01, 1.0, log=True)})
    rank = 20
    description = "CE − γ·H(p): rewards high-entropy (less confident) predictions"
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
        # Hard labels: their -100 rows are left out, as CE leaves them out; soft targets (under
        # a mixing base method) have none.
        entropy = prediction_entropy(logits, y if y.ndim == 1 else None)
        return LossResult(-self.gamma * entropy, {"entropy": entropy.detach()}, {})
