"""``method=supcon_carrot``: SupCon with ẑ and normalize(T(ẑ)) as the two views."""

from __future__ import annotations

from torch import Tensor, nn

from carrot.functional import OperatorOptions
from carrot.memory import carrot_supcon_loss
from carrot.methods.base import LossResult, Method, MethodContext, Step, register_method
from carrot.methods.carrot import class_memory
from carrot.methods.supcon import SupConSettings, probe_ce
from carrot.tune.space import Float, space

__all__ = ["SupConCarrot"]


@register_method
class SupConCarrot(Method):
    name = "supcon_carrot"
    search_space = space(
        {
            "supcon.temperature": Float(0.05, 0.5, log=True),
            "carrot.lam": Float(0.1, 10.0, log=True),
        }
    )
    rank = 4
    label = "SupCon + CARROT view"
    description = "SupCon with ẑ and its CARROT expansion normalize(T(ẑ)) as two views"
    reference = "Khosla et al., NeurIPS 2020, with the CARROT operator as the second view"
    baseline = "supcon"
    uses = ("supcon", "carrot")
    min_per_class = 2
    min_classes = 2
    expands = True
    logs = ("supcon", "probe_ce")

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        c = context.settings["carrot"]
        self.operator: OperatorOptions = c  # the carrot section: immutable, already valid
        self.stop_grad_plus = bool(c.stop_grad_plus)
        self.memory = class_memory(context)

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        s: SupConSettings = self.settings("supcon")
        probe = probe_ce(z, target, head)
        contrastive, stats = carrot_supcon_loss(
            z,
            target,
            temperature=s.temperature,
            gather_global=s.gather_global,
            stop_grad_plus=self.stop_grad_plus,
            options=self.operator,
            memory=self.memory,
        )
        loss = contrastive + s.probe_weight * probe
        return LossResult(loss, {"supcon": contrastive.detach(), "probe_ce": probe.detach()}, stats)
