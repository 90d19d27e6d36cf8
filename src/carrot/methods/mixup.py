"""``method=mixup``: train on convex combinations of image pairs and of their labels."""

from __future__ import annotations

from dataclasses import dataclass

from carrot.methods._mixing import MixingMethod, MixingSettings
from carrot.methods.base import register_method
from carrot.settings import Range, ranged
from carrot.tune.space import Float, space

__all__ = ["Mixup", "MixupSettings"]


@dataclass(frozen=True)
class MixupSettings(MixingSettings):
    """The ``mixup`` section. x̃ = λ x_i + (1 − λ) x_j, ỹ = λ y_i + (1 − λ) y_j, λ ~ Beta(α, α)."""

    alpha: float = ranged(0.2, Range(0, open_lo=True))
    """α of Beta(α, α); 0.2 is the paper's ImageNet setting."""


@register_method
class Mixup(MixingMethod):
    name = "mixup"
    search_space = space({"alpha": Float(0.1, 2.0, log=True)})
    rank = 10
    label = "mixup"
    description = "mixup: images and one-hot labels mixed pairwise, λ ~ Beta(α, α) (timm's Mixup)"
    reference = "Zhang et al., mixup: Beyond Empirical Risk Minimization, ICLR 2018"
    settings_type = MixupSettings
