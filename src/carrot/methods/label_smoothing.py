"""``method=label_smoothing``: cross-entropy against smoothed one-hot targets."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from carrot.methods.base import LossResult, Method, MethodContext, Step, register_method
from carrot.methods.carrot import observe, observer
from carrot.settings import Range, ranged
from carrot.tune.space import Float, space

__all__ = ["LabelSmoothing", "LabelSmoothingSettings"]


@dataclass(frozen=True)
class LabelSmoothingSettings:
    """The ``label_smoothing`` section (``train.label_smoothing`` of earlier versions)."""

    smoothing: float = ranged(0.1, Range(0, 1, open_hi=True))
    """ε: the target is (1 − ε) on the label and ε / N spread over all N classes."""


@register_method
class LabelSmoothing(Method):
    name = "label_smoothing"
    search_space = space({"smoothing": Float(0.0, 0.3)})
    rank = 1
    label = "CE + label smoothing {smoothing:g}"
    description = "cross-entropy against targets smoothed by ε"
    reference = "Szegedy et al., Rethinking the Inception Architecture, CVPR 2016"
    settings_type = LabelSmoothingSettings
    logs = ("ce",)

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.smoothing = float(self.settings().smoothing)
        self.observer = observer(context)

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        ce = F.cross_entropy(logits.float(), target, label_smoothing=self.smoothing)
        stats = observe(self.observer, z, target) if step.observe else {}
        return LossResult(ce, {"ce": ce.detach()}, stats)
