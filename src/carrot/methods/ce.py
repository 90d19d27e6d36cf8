"""``method=ce``: cross-entropy, the baseline every other method is compared with."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from carrot.methods.base import LossResult, Method, MethodContext, Step, register_method
from carrot.methods.carrot import observe, observer
from carrot.tune.space import space

__all__ = ["CrossEntropy"]


@register_method
class CrossEntropy(Method):
    name = "ce"
    search_space = space({})  # the shared training settings only
    rank = 0
    label = "CE"
    description = "cross-entropy on the classifier's logits of ẑ (the baseline)"
    reference = "the softmax classifier; cosine head: Wang et al., CosFace, CVPR 2018"
    baseline = None
    logs = ("ce",)

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.observer = observer(context)

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        ce = F.cross_entropy(logits.float(), target)
        stats = observe(self.observer, z, target) if step.observe else {}
        return LossResult(ce, {"ce": ce.detach()}, stats)
