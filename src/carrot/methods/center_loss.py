"""``method=center_loss``: CE + λ·½‖ẑ − c_y‖² with centres moved by the paper's own rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from carrot.baselines import CenterLoss as CenterLossModule
from carrot.methods._ce_term import CEPlusTerm
from carrot.methods.base import LossResult, MethodContext, Step, register_method
from carrot.settings import WEIGHT, Range, ranged
from carrot.tune.space import Float, space

__all__ = ["CenterLoss", "CenterLossSettings"]


@dataclass(frozen=True)
class CenterLossSettings:
    """The ``center_loss`` section (the paper's λ and α)."""

    lam: float = ranged(0.003, WEIGHT)
    """λ, the weight of the center loss: L = CE + λ·½·mean ‖ẑ − c_y‖²."""
    alpha: float = ranged(0.5, Range(0, 1))
    """α, the centres' learning rate in the paper's update c_j ← c_j − α·Δc_j."""


@register_method
class CenterLoss(CEPlusTerm):
    """The centres are state, not optimizer parameters: the paper moves them by its own rule
    (Δc_j = Σ_{y_i=j}(c_j − x_i) / (1 + n_j), c_j ← c_j − α·Δc_j) from the global batch after each
    loss, whatever the network's optimizer. They are the buffer ``centers.centers`` (N, D), in the
    checkpoint; they start at 0 and read the classifier's input ẑ = z / ‖z‖ (on the raw z the
    loss could shrink ‖z‖ without changing a logit)."""

    name = "center_loss"
    search_space = space({"lam": Float(1e-4, 0.1, log=True), "alpha": Float(0.1, 1.0)})
    rank = 22
    description = "CE + λ·½‖ẑ − c_y‖², class centres moved by the paper's update"
    reference = "Wen et al., A Discriminative Feature Learning Approach for Deep Face Recognition, ECCV 2016"
    settings_type = CenterLossSettings
    logs = ("ce", "center")

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        s = self.settings()
        self.lam = float(s.lam)
        self.centers = CenterLossModule(
            context.num_classes, context.embedding_dim, alpha=float(s.alpha)
        )

    def term(
        self, z: Tensor, logits: Tensor, y: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        center = self.centers(F.normalize(z.float(), dim=1), y)
        return LossResult(self.lam * center, {"center": center.detach()}, {})
