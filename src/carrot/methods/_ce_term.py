"""What the addable baselines share: CE on the logits plus their own term, which
``method=X+NAME`` adds on top of another method instead."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from carrot.methods.base import LossResult, Method, MethodContext, Step
from carrot.methods.carrot import observe, observer

__all__ = ["CEPlusTerm"]


class CEPlusTerm(Method):
    """CE + :meth:`term`; alone, it observes the batch's class geometry for logging."""

    addable = True

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.observer = observer(context)

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        ce = F.cross_entropy(logits.float(), target)
        term = self.term(z, logits, target, head, step=step)
        stats = observe(self.observer, z, target) if step.observe else {}
        return LossResult(ce + term.loss, {"ce": ce.detach(), **term.parts}, stats)
