"""``method=center_loss_sgd``: center loss with the centres learned by the network's optimizer.

An example of a carrot method living in its own package (docs/methods.md, "Adding a method"):
this file and the entry point of ``pyproject.toml`` are all it takes. carrot's own
``center_loss`` moves the centres by the paper's update rule; this variant makes them
parameters, as KaiyangZhou's PyTorch center loss does (its own SGD, lr 0.5 there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carrot.functional import class_center_loss
from carrot.methods import LossResult, Method, MethodContext, Step, register_method
from carrot.settings import Range, ranged
from carrot.tune.space import Float, space


@dataclass(frozen=True)
class CenterLossSGDSettings:
    """The ``center_loss_sgd`` section."""

    weight: float = ranged(0.003, Range(0, None))
    """λ of the center term: L = CE + λ·½·mean ‖ẑ − c_y‖²."""
    lr_mult: float = ranged(100.0, Range(0, None, open_lo=True))
    """Learning rate of the centres relative to train.lr."""


@register_method
class CenterLossSGD(Method):
    name = "center_loss_sgd"  # method=center_loss_sgd; also the section's name
    description = "CE + λ·½‖ẑ − c_y‖² with class centres learned by the optimizer"
    reference = "Wen et al., A Discriminative Feature Learning Approach, ECCV 2016"
    baseline = "ce"
    settings_type = CenterLossSGDSettings
    logs = ("ce", "center")
    search_space = space({"weight": Float(1e-4, 0.1, log=True)})  # what carrot tune searches

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.weight = float(self.settings().weight)
        self.lr_mult = float(self.settings().lr_mult)
        self.centres = nn.Parameter(torch.zeros(context.num_classes, context.embedding_dim))

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.centres], "weight_decay": 0.0, "lr_mult": self.lr_mult}]

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        ce = F.cross_entropy(logits.float(), target)
        pull = class_center_loss(F.normalize(z.float(), dim=1), target, self.centres)
        loss = ce + self.weight * pull
        return LossResult(loss, {"ce": ce.detach(), "center": pull.detach()}, {})
