"""The CARROT operator's options: their one home (defaults, validation, documentation).

Every place that runs the operator takes an :class:`OperatorOptions`: :func:`carrot_operator`,
the losses, the modules, the trainer's ``carrot`` config section (which inherits these fields,
so each option is also a ``carrot.<name>`` setting) and the integrations. A new option is added
here and implemented in the operator; nothing else forwards it by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Literal

from carrot.settings import TEMPERATURE, WEIGHT

__all__ = ["CEKLOptions", "KLDirection", "OperatorOptions", "RadiusStat", "Space", "as_options"]

Space = Literal["euclidean", "angular"]
_SPACES = ("euclidean", "angular")
RadiusStat = Literal["rms", "median"]
_RADIUS_STATS = ("rms", "median")
KLDirection = Literal["plus_z", "z_plus", "symmetric"]
_KL_DIRECTIONS = ("plus_z", "z_plus", "symmetric")


@dataclass(frozen=True)
class OperatorOptions:
    """How the CARROT operator computes its class statistics and expansion.

    The defaults are the guide's formulas. Immutable and checked once, when built: a bad option
    fails before the first batch and is never re-checked per batch (:meth:`replace` builds a
    checked copy).

    Example:
        >>> options = OperatorOptions(max_gamma=1.5, sync_free=True)
        >>> z_plus, stats = carrot_operator(z, y, options=options)
    """

    eps: float = 1e-12
    """ε in γ_c = max(1, m_c / (f r_c + ε)); >= 0."""
    detach_stats: bool = True
    """Treat μ_c and γ_c as constants in the backward pass (the guide's default; then
    ∂z⁺/∂z = γ_c). ``False`` differentiates through all statistics."""
    max_gamma: float | None = None
    """Cap on γ_c (>= 1); ``None`` is the parameter-free formula."""
    unbiased_radius: bool = False
    """Use r_c · sqrt(n_c / (n_c - 1)), removing the small-sample bias of the RMS radius
    (about 13% low at K = 4)."""
    global_stats: bool = True
    """Under ``torch.distributed`` with more than one rank, compute the statistics over all
    ranks' embeddings (each rank transforms its own)."""
    sync_free: bool = False
    """Size the class list by the batch (B slots) instead of ``torch.unique``, so that the
    operator never waits for the device; ``stats["valid"]`` marks the used slots."""
    space: Space = "euclidean"
    """``"euclidean"`` (the guide: statistics and expansion in the ambient space) or
    ``"angular"`` (on the unit sphere: angles instead of distances, ẑ⁺ = exp_u(γ log_u ẑ))."""
    ignore_index: int | None = -100
    """Rows with this label are left out of the statistics and returned unchanged, as
    cross-entropy ignores them (its default is also -100); ``None`` counts every label."""
    radius_factor: float = 2.0
    """f in γ_c = max(1, m_c / (f r_c + ε)) (> 0). The guide's 2: classes of radius r whose
    centroids lie 2r apart just touch. A smaller f expands classes that overlap."""
    radius_stat: RadiusStat = "rms"
    """The radius r_c: ``"rms"`` (the guide's RMS distance of the members to the centroid) or
    ``"median"`` (their median distance to it, the mean of the two middle ones for an even
    count; robust to an outlier member). With ``global_stats`` under DDP the median is over every
    rank's members (their distances are all-gathered, B numbers per rank: exact); with
    ``sync_free`` it is computed by sorting, without a host sync. Not with ``unbiased_radius``."""

    def __post_init__(self) -> None:
        self.validate()

    def with_eps_detach(self, eps: float | None, detach_stats: bool | None) -> OperatorOptions:
        """A checked copy with ``eps`` and ``detach_stats`` overridden (``None``: kept); ``self``
        when nothing changes."""
        eps = self.eps if eps is None else eps
        detach_stats = self.detach_stats if detach_stats is None else detach_stats
        if eps == self.eps and detach_stats is self.detach_stats:
            return self
        return _with_eps_detach(self, eps, detach_stats)

    def validate(self, *, prefix: str = "") -> None:
        """Raises ``ValueError`` naming the first invalid option (``prefix`` + its name)."""
        eps, cap = self.eps, self.max_gamma
        if (
            isinstance(eps, bool)
            or not isinstance(eps, (int, float))
            or not (eps >= 0 and math.isfinite(eps))
        ):
            raise ValueError(f"{prefix}eps must be >= 0 and finite, got {eps!r}.")
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap >= 1
        ):
            raise ValueError(
                f"{prefix}max_gamma must be >= 1 or None (no cap), got {cap!r}; γ is never below 1."
            )
        factor = self.radius_factor
        if (
            isinstance(factor, bool)
            or not isinstance(factor, (int, float))
            or not (factor > 0 and math.isfinite(factor))
        ):
            raise ValueError(f"{prefix}radius_factor must be > 0 and finite, got {factor!r}.")
        if self.radius_stat not in _RADIUS_STATS:
            raise ValueError(
                f"{prefix}radius_stat must be one of {_RADIUS_STATS}, got {self.radius_stat!r}."
            )
        if self.radius_stat == "median" and self.unbiased_radius is True:
            raise ValueError(
                f"{prefix}unbiased_radius must be False with radius_stat='median' (the correction "
                "is the RMS radius's), got True."
            )
        for name in ("detach_stats", "unbiased_radius", "global_stats", "sync_free"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{prefix}{name} must be True or False, got {value!r}.")
        if self.space not in _SPACES:
            raise ValueError(f"{prefix}space must be one of {_SPACES}, got {self.space!r}.")
        index = self.ignore_index
        if index is not None and (isinstance(index, bool) or not isinstance(index, Integral)):
            raise ValueError(f"{prefix}ignore_index must be an integer or None, got {index!r}.")

    def replace(self, **changes: Any) -> OperatorOptions:
        """A copy with some options changed (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, source: Any) -> OperatorOptions:
        """The options held as attributes of ``source`` (e.g. the trainer's ``carrot`` config
        section, which inherits these fields), as a plain :class:`OperatorOptions`."""
        return cls(**{f.name: getattr(source, f.name) for f in dataclasses.fields(cls)})


@functools.lru_cache(maxsize=64)
def _with_eps_detach(options: OperatorOptions, eps: float, detach_stats: bool) -> OperatorOptions:
    # Immutable options are hashable: a call per batch with the same keywords builds one copy.
    # Checked here too: a subclass (the trainer's carrot section) is checked by its builder.
    copy = dataclasses.replace(options, eps=eps, detach_stats=detach_stats)
    OperatorOptions.validate(copy)
    return copy


_NAMES = tuple(f.name for f in dataclasses.fields(OperatorOptions))
_GUIDE = OperatorOptions()  # the defaults, for calls without options


def as_options(options: OperatorOptions | None) -> OperatorOptions:
    """``options`` (``None``: the guide's defaults), for the modules' constructors; an
    :class:`OperatorOptions` was checked when it was built."""
    if options is None:
        return OperatorOptions()
    if not isinstance(options, OperatorOptions):
        raise ValueError(
            f"options must be an OperatorOptions, got {type(options).__name__}; build one with "
            "carrot.OperatorOptions(max_gamma=..., ...)."
        )
    return options


def _is_number(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class CEKLOptions:
    """The hyperparameters of the CE + λ·T²·KL loss (:func:`carrot_ce_kl_loss`), their one home:
    defaults (the guide's recipe), validation and documentation. Immutable, checked once when built.

    Example:
        >>> loss_options = CEKLOptions(lam=2.0, kl_direction="symmetric")
        >>> loss, stats = carrot_ce_kl_loss(z, y, head, loss_options=loss_options)
    """

    T: float = 1.0
    """Temperature of the KL term, in [0.001, 1000]."""
    lam: float = 1.0
    """Weight λ of the KL term, in [0, 10000]."""
    kl_direction: KLDirection = "plus_z"
    """``"plus_z"``: KL(p⁺ ‖ p), what the guide's code computes; ``"z_plus"``: KL(p ‖ p⁺), the
    direction its comment names; ``"symmetric"``: their mean (see :func:`kl_consistency`)."""
    aux_ce_weight: float = 0.0
    """Weight of the auxiliary CE(classifier(ẑ⁺), y), in [0, 10000]; 0 is off."""
    stop_grad_plus: bool = False
    """Detach the z⁺ branch (a fixed target); the guide lets gradients flow through both."""
    label_smoothing: float = 0.0
    """Label smoothing of the CE terms, in [0, 1)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, *, prefix: str = "") -> None:
        """Raises ``ValueError`` naming the first invalid hyperparameter (``prefix`` + its name)."""
        if not (_is_number(self.T) and TEMPERATURE.contains(self.T)):
            raise ValueError(
                f"{prefix}T must be {TEMPERATURE.describe()} (logits / T and λ·T² overflow "
                f"beyond), got {self.T!r}."
            )
        if not (_is_number(self.lam) and WEIGHT.contains(self.lam)):
            raise ValueError(
                f"{prefix}lam must be {WEIGHT.describe()} (a larger weight overflows the loss), "
                f"got {self.lam!r}."
            )
        if self.kl_direction not in _KL_DIRECTIONS:
            raise ValueError(
                f"{prefix}kl_direction must be one of {_KL_DIRECTIONS}, got {self.kl_direction!r}."
            )
        if not (_is_number(self.aux_ce_weight) and WEIGHT.contains(self.aux_ce_weight)):
            raise ValueError(
                f"{prefix}aux_ce_weight must be {WEIGHT.describe()}, got {self.aux_ce_weight!r}."
            )
        if not isinstance(self.stop_grad_plus, bool):
            raise ValueError(
                f"{prefix}stop_grad_plus must be True or False, got {self.stop_grad_plus!r}."
            )
        if not (_is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise ValueError(
                f"{prefix}label_smoothing must be in [0, 1), got {self.label_smoothing!r}."
            )

    def replace(self, **changes: Any) -> CEKLOptions:
        """A copy with some hyperparameters changed (validated)."""
        return dataclasses.replace(self, **changes)


_GUIDE_LOSS = CEKLOptions()  # the defaults, for calls without loss options
