"""carrot: CARROT, a parameter-free class-geometry embedding regularizer for fine-grained
visual classification, in PyTorch.

The formulas live in :mod:`carrot.functional.geometry`. ``carrot_operator`` and the CARROT
losses exported here are :mod:`carrot.functional`'s (one function each): given a
:class:`ClassMemory` they read it and update it with the batch. The stateful modules are exported
here too: the CARROT losses and transform, the class memory, center loss and ISDA.
"""

import torch

from carrot.baselines import CenterLoss, ISDALoss
from carrot.functional import (
    CEKLOptions,
    ClassGeometry,
    OperatorOptions,
    carrot_ce_kl_loss,
    carrot_consistency_loss,
    carrot_operator,
    carrot_supcon_loss,
    class_geometry,
    expand,
    expansion_factors,
    kl_consistency,
    summarize_stats,
    supcon_loss,
)
from carrot.memory import ClassMemory
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
    "CenterLoss",
    "ClassGeometry",
    "ClassMemory",
    "ISDALoss",
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
