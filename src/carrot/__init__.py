"""carrot: CARROT, a parameter-free class-geometry embedding regularizer for fine-grained
visual classification, in PyTorch.

The formulas live in :mod:`carrot.functional.geometry`. ``carrot_operator`` and the two CARROT
losses exported here (and CARROT's term alone, ``carrot_consistency_loss``) are :mod:`carrot.functional`'s plus the read and update of an optional
:class:`~carrot.memory.ClassMemory` (the functional ones only read a memory).
"""

import torch

from carrot.functional import (
    CEKLOptions,
    ClassGeometry,
    OperatorOptions,
    class_geometry,
    expand,
    expansion_factors,
    kl_consistency,
    summarize_stats,
    supcon_loss,
)
from carrot.memory import (
    carrot_ce_kl_loss,
    carrot_consistency_loss,
    carrot_operator,
    carrot_supcon_loss,
)
from carrot.modules import CarrotCEKLLoss, CarrotSupConLoss, CarrotTransform, SupConLoss
from carrot.samplers import PKSampler
from carrot.version import __version__


def load_model(path: str) -> torch.nn.Module:
    """The classifier of a ``carrot export`` folder, in eval mode (see :mod:`carrot.export`)."""
    from carrot.export import load_model as _load

    return _load(path)


__all__ = [
    "CEKLOptions",
    "CarrotCEKLLoss",
    "CarrotSupConLoss",
    "CarrotTransform",
    "ClassGeometry",
    "OperatorOptions",
    "PKSampler",
    "SupConLoss",
    "__version__",
    "carrot_ce_kl_loss",
    "carrot_consistency_loss",
    "carrot_operator",
    "carrot_supcon_loss",
    "class_geometry",
    "expand",
    "expansion_factors",
    "kl_consistency",
    "load_model",
    "summarize_stats",
    "supcon_loss",
]
