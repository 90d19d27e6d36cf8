"""Pure tensor functions: the CARROT class geometry, the operator and its losses, and the FGVC
baselines (maximum entropy, pairwise confusion, center loss, ISDA)."""

from carrot.functional.baselines import (
    class_center_loss,
    class_center_update_,
    euclidean_confusion,
    maxent_loss,
    pairwise_confusion_loss,
    prediction_entropy,
)
from carrot.functional.expansion import expand, expansion_factors
from carrot.functional.geometry import ClassGeometry, StatsReducer, class_geometry
from carrot.functional.isda import isda_lambda, isda_logits, isda_loss, isda_update_
from carrot.functional.losses import (
    KLDirection,
    carrot_ce_kl_loss,
    carrot_consistency_loss,
    carrot_supcon_loss,
    kl_consistency,
    supcon_loss,
)
from carrot.functional.nearest import Remembered
from carrot.functional.numerics import compute_dtype, safe_normalize
from carrot.functional.operator import carrot_operator, summarize_stats
from carrot.functional.options import CEKLOptions, OperatorOptions, Space

__all__ = [
    "CEKLOptions",
    "ClassGeometry",
    "KLDirection",
    "OperatorOptions",
    "Remembered",
    "Space",
    "StatsReducer",
    "carrot_ce_kl_loss",
    "carrot_consistency_loss",
    "carrot_operator",
    "carrot_supcon_loss",
    "class_center_loss",
    "class_center_update_",
    "class_geometry",
    "compute_dtype",
    "euclidean_confusion",
    "expand",
    "expansion_factors",
    "isda_lambda",
    "isda_logits",
    "isda_loss",
    "isda_update_",
    "kl_consistency",
    "maxent_loss",
    "pairwise_confusion_loss",
    "prediction_entropy",
    "safe_normalize",
    "summarize_stats",
    "supcon_loss",
]
