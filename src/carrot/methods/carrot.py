"""``method=carrot``: CE + λ·T²·KL(ẑ, ẑ⁺), the CARROT regularizer; addable as ``X+carrot``.

The ``carrot`` config section (:class:`CarrotSettings`) is also read by supcon_carrot and by the
logging-only class geometry of the other methods. ``carrot.guide`` is resolved here, in
:meth:`CarrotSettings.resolve`, once, when the config is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carrot.functional import CEKLOptions, OperatorOptions, carrot_operator
from carrot.memory import ClassMemory, carrot_ce_kl_loss, carrot_consistency_loss
from carrot.methods.base import LossResult, Method, MethodContext, Step, register_method
from carrot.settings import Range, check_ranges, ranged
from carrot.tune.space import Float, space

__all__ = ["CARROT", "CarrotSettings", "guide_recipe", "lam_at", "observer"]

IMPLEMENTATION_KEYS = ("sync_free", "global_stats", "ignore_index")
"""carrot keys that change how, not what, is computed: they combine with ``carrot.guide``."""


@dataclass(frozen=True)
class CarrotSettings(CEKLOptions, OperatorOptions):
    """The ``carrot`` section: the operator's options (:class:`carrot.OperatorOptions`) and the
    CE+KL loss's (:class:`carrot.CEKLOptions`), declared there once, plus the trainer's own.
    Immutable; checked once, by the config build (:meth:`validate`, with the section's prefix),
    so that the method passes it to the operator and the loss as it is.

    The defaults are the recommended configuration: the guide's recipe with γ capped at 1.5.
    ``guide: true`` runs the guide's exact recipe (see :meth:`resolve`)."""

    max_gamma: float | None = 1.5
    """Cap on γ. The trainer's default, 1.5, is the recommended configuration (docs/stability.md:
    no significant harm on any suite over 10 paired seeds); null is the guide's uncapped formula."""
    guide: bool = False
    """Run the design guide's exact recipe: every recipe key left unset takes the guide's value
    (the library defaults of OperatorOptions and CEKLOptions); a recipe key set to another value
    is an error. sync_free, global_stats and ignore_index combine with it."""
    lam_warmup: float = ranged(0.0, Range(0, 1))
    """Fraction of training over which λ rises linearly from 0 (0: constant λ)."""
    memory: bool = False
    """m_c from a running memory of every class's centroid, not only the batch's classes."""
    memory_momentum: float = ranged(0.9, Range(0, 1, open_hi=True))
    """Momentum of the memory's moving averages of the class centres and radii."""

    def __post_init__(self) -> None:
        pass  # checked by the config build, which names the section (carrot.max_gamma ...)

    def validate(self, *, prefix: str = "") -> None:
        """The operator's and the loss's rules (the ranges of this class's own fields are
        enforced by the config build, from their declarations)."""
        OperatorOptions.validate(self, prefix=prefix)
        CEKLOptions.validate(self, prefix=prefix)

    def replace(self, **changes: Any) -> CarrotSettings:
        """A checked copy with some settings changed."""
        out = dataclasses.replace(self, **changes)
        out.validate()
        check_ranges(out)
        return out

    def resolve(self, explicit: set[str], *, prefix: str = "carrot.") -> CarrotSettings:
        """Resolve ``guide``, the one place it takes effect: with ``guide: true`` every recipe
        key the user left unset takes the guide's value, so that the saved config shows what
        runs. A recipe key set explicitly (``explicit``) to another value is refused."""
        if not self.guide:
            return self
        guide = guide_recipe()
        clash = [k for k in guide if k in explicit and getattr(self, k) != guide[k]]
        if clash:
            raise ValueError(
                "carrot.guide=true runs the guide's exact recipe; drop the other carrot settings "
                f"({', '.join(prefix + k for k in clash)}) or set carrot.guide=false."
            )
        return dataclasses.replace(self, **guide)


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def guide_recipe() -> dict[str, Any]:
    """The guide's value of every recipe key of the carrot section: the library defaults of
    :class:`OperatorOptions` and :class:`CEKLOptions` (which are the guide's formulas), and the
    trainer's own keys at their defaults (off)."""
    values = {**_defaults(CarrotSettings), **_defaults(OperatorOptions), **_defaults(CEKLOptions)}
    return {k: v for k, v in values.items() if k not in ("guide", *IMPLEMENTATION_KEYS)}


def lam_at(settings: CarrotSettings, progress: float) -> float:
    """λ after the linear warm-up over the first ``lam_warmup`` of training (progress in [0, 1])."""
    if settings.lam_warmup <= 0:
        return settings.lam
    return settings.lam * min(1.0, progress / settings.lam_warmup)


def observer(context: MethodContext) -> OperatorOptions:
    """The operator options of the logging-only class geometry (the guide's formulas with the
    carrot section's ε and statistics scope)."""
    c = context.settings["carrot"]
    return OperatorOptions(eps=c.eps, global_stats=c.global_stats)


def observe(options: OperatorOptions, z: Tensor, y: Tensor) -> dict[str, Any]:
    """The class geometry of the batch for logging only: the guide's formulas, no gradient.

    Args:
        options: From :func:`observer`.
        z: Raw embeddings. Shape: (B, D).
        y: Integer labels. Shape: (B,).
    """
    with torch.no_grad():
        _, stats = carrot_operator(F.normalize(z.detach().float(), dim=1), y, options=options)
    return stats


def class_memory(context: MethodContext) -> ClassMemory | None:
    """The class memory of ``carrot.memory`` (None when off)."""
    c = context.settings["carrot"]
    if not c.memory:
        return None
    return ClassMemory(context.num_classes, context.embedding_dim, momentum=c.memory_momentum)


@register_method
class CARROT(Method):
    name = "carrot"
    search_space = space(
        {
            "lam": Float(0.1, 10.0, log=True),
            "T": Float(1.0, 4.0),
            "max_gamma": Float(1.1, 3.0),
            "radius_factor": Float(1.0, 4.0),
        }
    )
    rank = 2
    label = "CARROT"  # label_for adds the settings that ran
    description = "CE + λ·T²·KL between the classifier's outputs on ẑ and its class expansion ẑ⁺"
    reference = "the CARROT design guide (this project), 2026"
    settings_type = CarrotSettings
    min_per_class = 2
    min_classes = 2
    addable = True
    default = True
    expands = True
    logs = ("ce", "kl", "aux_ce")

    @classmethod
    def label_for(cls, settings: Mapping[str, Any] | None = None) -> str:
        """``CARROT (λ = 1, T = 1, γ ≤ 1.5)``: the recipe's keys as they ran (the guide named)."""
        s: CarrotSettings = (settings or {}).get("carrot") or CarrotSettings()
        cap = "γ uncapped" if s.max_gamma is None else f"γ ≤ {s.max_gamma:g}"
        guide = "the guide, " if s.guide else ""
        return f"{cls.label} ({guide}λ = {s.lam:g}, T = {s.T:g}, {cap})"

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        s: CarrotSettings = context.settings["carrot"]
        self.section_settings = s
        self.operator: OperatorOptions = s  # the section is both, immutable and already valid
        self.loss_options: CEKLOptions = s
        self.memory = class_memory(context)

    def _lam(self, step: Step) -> float | None:
        return (
            lam_at(self.section_settings, step.progress)
            if self.section_settings.lam_warmup > 0
            else None
        )

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        loss, stats = carrot_ce_kl_loss(
            z,
            target,
            head,
            logits=logits,
            lam=self._lam(step),
            loss_options=self.loss_options,
            options=self.operator,
            memory=self.memory,
        )
        parts = {"ce": stats["ce"], "kl": stats["kl"]}
        if self.loss_options.aux_ce_weight > 0:
            parts["aux_ce"] = stats["aux_ce"]
        return LossResult(loss, parts, stats)

    def term(
        self, z: Tensor, logits: Tensor, y: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        lam = self._lam(step)
        options = self.loss_options if lam is None else self.loss_options.replace(lam=lam)
        loss, stats = carrot_consistency_loss(
            z,
            y,
            head,
            logits=logits,
            loss_options=options,
            options=self.operator,
            memory=self.memory,
        )
        parts = {"kl": stats["kl"]}
        if options.aux_ce_weight > 0:
            parts["aux_ce"] = stats["aux_ce"]
        return LossResult(loss, parts, stats)
