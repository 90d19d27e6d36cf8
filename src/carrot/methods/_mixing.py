"""What mixup and cutmix share: timm's ``Mixup`` as the input transform, timm's
``SoftTargetCrossEntropy`` as the loss (not hand-written, as the house style asks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from carrot.methods.base import LossResult, Method, MethodContext, Step
from carrot.settings import Range, ranged

__all__ = ["MixingMethod", "MixingSettings"]


@dataclass(frozen=True)
class MixingSettings:
    alpha: float = ranged(1.0, Range(0, open_lo=True))
    """α of the Beta(α, α) distribution the mixing ratio λ is drawn from (once per batch)."""
    prob: float = ranged(1.0, Range(0, 1))
    """Probability of mixing a batch (else it trains on the images as they are)."""
    label_smoothing: float = ranged(0.0, Range(0, 1, open_hi=True))
    """Label smoothing of the mixed targets (timm's; 0: off)."""


class MixingMethod(Method):
    """Mixes each batch with its reverse (timm ``mode="batch"``: image i with image B−1−i, one
    λ per batch from NumPy's global RNG, which the checkpoint saves, so a resume is exact).
    Under P×K sampling the partner is almost always of another class. The targets are soft,
    so CARROT's per-class statistics cannot be added on top."""

    hard_labels = False
    mixes_inputs = True
    logs = ("soft_ce",)
    cutmix: bool = False

    def __init__(self, context: MethodContext) -> None:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        super().__init__(context)
        s: MixingSettings = self.settings()
        kwargs: dict[str, Any] = (
            dict(mixup_alpha=0.0, cutmix_alpha=s.alpha)
            if self.cutmix
            else dict(mixup_alpha=s.alpha, cutmix_alpha=0.0)
        )
        self.mix = Mixup(
            **kwargs,
            prob=s.prob,
            mode="batch",
            label_smoothing=s.label_smoothing,
            num_classes=context.num_classes,
        )
        self.soft_ce = SoftTargetCrossEntropy()

    def transform(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x, target = self.mix(x, y)
        return x, target

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        loss = self.soft_ce(logits.float(), target.float())
        return LossResult(loss, {"soft_ce": loss.detach()}, {})
