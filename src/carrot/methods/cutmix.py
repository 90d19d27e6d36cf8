"""``method=cutmix``: paste a box of another image, mix the labels by the box's area."""

from __future__ import annotations

from dataclasses import dataclass

from carrot.methods._mixing import MixingMethod, MixingSettings
from carrot.methods.base import register_method
from carrot.settings import Range, ranged
from carrot.tune.space import Float, space

__all__ = ["CutMix", "CutMixSettings"]


@dataclass(frozen=True)
class CutMixSettings(MixingSettings):
    """The ``cutmix`` section. A box of area 1 − λ (λ ~ Beta(α, α)) is cut from x_j into x_i;
    ỹ = λ y_i + (1 − λ) y_j with λ corrected to the box's area after clipping."""

    alpha: float = ranged(1.0, Range(0, open_lo=True))
    """α of Beta(α, α); 1.0 (λ uniform) is the paper's setting."""


@register_method
class CutMix(MixingMethod):
    name = "cutmix"
    search_space = space({"alpha": Float(0.1, 2.0, log=True)})
    rank = 11
    label = "CutMix"
    description = "CutMix: a box of another image pasted in, labels mixed by area (timm's Mixup)"
    reference = "Yun et al., CutMix, ICCV 2019"
    settings_type = CutMixSettings
    cutmix = True
