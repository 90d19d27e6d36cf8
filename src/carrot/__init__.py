"""carrot: CARROT, a parameter-free class-geometry embedding regularizer for fine-grained
visual classification, in PyTorch.

The formulas live in :mod:`carrot.functional.geometry`.
"""

from carrot.functional import (
    ClassGeometry,
    OperatorOptions,
    carrot_ce_kl_loss,
    carrot_operator,
    carrot_supcon_loss,
    class_geometry,
    expand,
    expansion_factors,
    kl_consistency,
    summarize_stats,
    supcon_loss,
)
from carrot.modules import CarrotCEKLLoss, CarrotSupConLoss, CarrotTransform, SupConLoss
from carrot.samplers import PKSampler

__version__ = "0.1.0"

__all__ = [
    "CarrotCEKLLoss",
    "CarrotSupConLoss",
    "CarrotTransform",
    "ClassGeometry",
    "OperatorOptions",
    "PKSampler",
    "SupConLoss",
    "__version__",
    "carrot_ce_kl_loss",
    "carrot_operator",
    "carrot_supcon_loss",
    "class_geometry",
    "expand",
    "expansion_factors",
    "kl_consistency",
    "summarize_stats",
    "supcon_loss",
]
