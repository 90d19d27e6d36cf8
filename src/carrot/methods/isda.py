"""``method=isda``: Implicit Semantic Data Augmentation, CE of logits raised by the class
covariances of ẑ, estimated online (state in the checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from carrot.baselines import ISDALoss
from carrot.methods.base import LossResult, Method, MethodContext, Step, register_method
from carrot.methods.carrot import observe, observer
from carrot.settings import WEIGHT, ranged
from carrot.tune.space import Choice, space

__all__ = ["ISDA", "ISDASettings", "linear_map"]


@dataclass(frozen=True)
class ISDASettings:
    """The ``isda`` section."""

    lam0: float = ranged(0.5, WEIGHT)
    """λ₀: the augmentation strength grows as λ = λ₀ · t / T over training."""


def linear_map(head: nn.Module) -> Tensor:
    """W such that the head's logits of a unit vector ẑ are W ẑ (+ b): a linear head's weight,
    or s · normalize(w_c) for the cosine classifier (its input normalization is the identity on
    ẑ, so ISDA augments ẑ under the head taken as this linear map).

    Returns:
        W. Shape: (N, D).
    """
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(
            f"method=isda needs a linear or cosine classifier head with a (N, D) weight, got "
            f"{type(head).__name__}."
        )
    if isinstance(head, nn.Linear):
        return weight
    log_scale = getattr(head, "log_scale", None)
    if not isinstance(log_scale, Tensor):
        raise ValueError(
            f"method=isda needs a linear or cosine classifier head, got {type(head).__name__}."
        )
    return log_scale.exp() * F.normalize(weight, dim=1)


@register_method
class ISDA(Method):
    """The features are the classifier's input ẑ = z / ‖z‖; the covariances are buffers
    ``isda.mean`` (N, D), ``isda.covariance`` (N, D, D) and ``isda.count`` (N,), merged from the
    global batch before each loss (the paper's Algorithm 1), in the checkpoint. N·D² numbers:
    200 classes of 2048-d features take 3.4 GB."""

    name = "isda"
    search_space = space(
        {"lam0": Choice((0.1, 0.25, 0.5, 1.0, 2.5, 7.5))}
    )  # the authors' 0.5, ImageNet's 7.5
    rank = 23
    description = (
        "CE of logits z_j + (λ/2)(w_j − w_y)ᵀΣ_y(w_j − w_y): the bound on CE under class-covariance "
        "feature augmentation (λ = λ₀·t/T)"
    )
    reference = "Wang et al., Implicit Semantic Data Augmentation for Deep Networks, NeurIPS 2019"
    settings_type = ISDASettings
    logs = ("ce", "isda")

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.isda = ISDALoss(
            context.num_classes, context.embedding_dim, lam0=float(self.settings().lam0)
        )
        self.observer = observer(context)

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        features = F.normalize(z.detach().float(), dim=1)
        loss = self.isda(features, logits, target, linear_map(head), progress=step.progress)
        ce = F.cross_entropy(logits.detach().float(), target)
        stats = observe(self.observer, z, target) if step.observe else {}
        return LossResult(loss, {"ce": ce, "isda": loss.detach()}, stats)
