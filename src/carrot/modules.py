"""``nn.Module`` forms of the CARROT operator and losses.

Thin wrappers over :mod:`carrot.functional`: they hold the hyperparameters (validated here, so a
bad value fails when the module is built, not mid-epoch) and the statistics of the last call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from carrot.functional.geometry import Space
from carrot.functional.losses import (
    _KL_DIRECTIONS,
    KLDirection,
    carrot_ce_kl_loss,
    carrot_supcon_loss,
    supcon_loss,
)
from carrot.functional.operator import _check_options, carrot_operator, summarize_stats
from carrot.memory import ClassMemory

__all__ = ["CarrotCEKLLoss", "CarrotSupConLoss", "CarrotTransform", "SupConLoss"]


class _KeepsStats(nn.Module):
    last_stats: dict[str, Any] | None

    def summary(
        self, *, sync: bool = False, quantiles: Sequence[float] = (0.1, 0.5, 0.9)
    ) -> dict[str, Any]:
        """Mean γ, max γ, fraction of γ > 1, r/m quantiles and classes in batch of the last call.

        0-d tensors (no host sync) unless ``sync=True``; see :func:`summarize_stats`.
        """
        if self.last_stats is None:
            raise RuntimeError(f"{type(self).__name__}.summary() needs a forward call first.")
        return summarize_stats(self.last_stats, quantiles=quantiles, sync=sync)


def _check_temperature(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}.")


class CarrotTransform(_KeepsStats):
    """The CARROT operator as a module: ``forward(z, y) -> z⁺``.

    Keeps the statistics of the last call in ``last_stats`` (detached tensors) and summarizes
    them with :meth:`summary`. See :func:`carrot.functional.carrot_operator` for the arguments.

    Example:
        >>> transform = CarrotTransform()
        >>> z_plus = transform(F.normalize(z, dim=1), y)
        >>> transform.summary(sync=True)["gamma_mean"]
    """

    def __init__(
        self,
        *,
        eps: float = 1e-12,
        detach_stats: bool = True,
        max_gamma: float | None = None,
        unbiased_radius: bool = False,
        global_stats: bool = True,
        sync_free: bool = False,
        space: Space = "euclidean",
        memory: ClassMemory | None = None,
    ) -> None:
        super().__init__()
        _check_options(eps, max_gamma)
        self.space = space
        self.memory = memory
        self.eps = eps
        self.detach_stats = detach_stats
        self.max_gamma = max_gamma
        self.unbiased_radius = unbiased_radius
        self.global_stats = global_stats
        self.sync_free = sync_free
        self.last_stats = None

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        """Args:
            z: Embeddings. Shape: (B, D).
            y: Integer class labels. Shape: (B,).

        Returns:
            z⁺. Shape: (B, D).
        """
        z_plus, self.last_stats = carrot_operator(
            z,
            y,
            eps=self.eps,
            detach_stats=self.detach_stats,
            max_gamma=self.max_gamma,
            unbiased_radius=self.unbiased_radius,
            global_stats=self.global_stats,
            sync_free=self.sync_free,
            space=self.space,
            memory=self.memory,
        )
        return z_plus

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps}, detach_stats={self.detach_stats}, max_gamma={self.max_gamma}, "
            f"unbiased_radius={self.unbiased_radius}, global_stats={self.global_stats}"
        )


class CarrotCEKLLoss(_KeepsStats):
    """CE + λ·KL CARROT regularization: ``forward(z, y, classifier) -> loss``.

    See :func:`carrot.functional.carrot_ce_kl_loss` for the arguments; the stats of the last
    call (operator statistics and loss parts) are in ``last_stats``.
    """

    def __init__(
        self,
        *,
        T: float = 1.0,
        lam: float = 1.0,
        kl_direction: KLDirection = "plus_z",
        aux_ce_weight: float = 0.0,
        max_gamma: float | None = None,
        stop_grad_plus: bool = False,
        label_smoothing: float = 0.0,
        eps: float = 1e-12,
        detach_stats: bool = True,
        unbiased_radius: bool = False,
        global_stats: bool = True,
        space: Space = "euclidean",
        memory: ClassMemory | None = None,
    ) -> None:
        super().__init__()
        _check_temperature("T", T)
        _check_options(eps, max_gamma)
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam!r}.")
        if not aux_ce_weight >= 0:
            raise ValueError(f"aux_ce_weight must be >= 0, got {aux_ce_weight!r}.")
        if kl_direction not in _KL_DIRECTIONS:
            raise ValueError(f"kl_direction must be one of {_KL_DIRECTIONS}, got {kl_direction!r}.")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.options: dict[str, Any] = dict(
            T=T,
            lam=lam,
            kl_direction=kl_direction,
            aux_ce_weight=aux_ce_weight,
            max_gamma=max_gamma,
            stop_grad_plus=stop_grad_plus,
            label_smoothing=label_smoothing,
            eps=eps,
            detach_stats=detach_stats,
            unbiased_radius=unbiased_radius,
            global_stats=global_stats,
            space=space,
        )
        self.memory = memory
        self.last_stats = None

    def forward(self, z: Tensor, y: Tensor, classifier: Callable[[Tensor], Tensor]) -> Tensor:
        """Args:
            z: Raw embeddings. Shape: (B, D).
            y: Integer class labels. Shape: (B,).
            classifier: Head mapping embeddings to logits.

        Returns:
            The 0-d loss.
        """
        loss, self.last_stats = carrot_ce_kl_loss(
            z, y, classifier, memory=self.memory, **self.options
        )
        return loss

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class SupConLoss(nn.Module):
    """Supervised contrastive loss: ``forward(features, labels) -> loss``, features (B, V, D).

    See :func:`carrot.functional.supcon_loss`.
    """

    def __init__(self, *, temperature: float = 0.1, gather_global: bool = False) -> None:
        super().__init__()
        _check_temperature("temperature", temperature)
        self.temperature = temperature
        self.gather_global = gather_global

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(
            features, labels, temperature=self.temperature, gather_global=self.gather_global
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_global={self.gather_global}"


class CarrotSupConLoss(_KeepsStats):
    """SupCon with z and its CARROT expansion as two views: ``forward(z, y) -> loss``.

    See :func:`carrot.functional.carrot_supcon_loss`; statistics in ``last_stats``.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        gather_global: bool = False,
        stop_grad_plus: bool = False,
        max_gamma: float | None = None,
        eps: float = 1e-12,
        detach_stats: bool = True,
        unbiased_radius: bool = False,
        global_stats: bool = True,
        space: Space = "euclidean",
        memory: ClassMemory | None = None,
    ) -> None:
        super().__init__()
        _check_temperature("temperature", temperature)
        _check_options(eps, max_gamma)
        self.memory = memory
        self.options: dict[str, Any] = dict(
            temperature=temperature,
            gather_global=gather_global,
            stop_grad_plus=stop_grad_plus,
            space=space,
            max_gamma=max_gamma,
            eps=eps,
            detach_stats=detach_stats,
            unbiased_radius=unbiased_radius,
            global_stats=global_stats,
        )
        self.last_stats = None

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        loss, self.last_stats = carrot_supcon_loss(z, y, memory=self.memory, **self.options)
        return loss

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
