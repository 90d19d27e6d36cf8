"""``nn.Module`` forms of the CARROT operator and losses.

Thin wrappers over :mod:`carrot.functional`: they hold the hyperparameters (validated here, so a
bad value fails when the module is built, not mid-epoch), the statistics of the last call and the
optional class memory, which they read and update (the functional operator only reads it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from carrot.functional.losses import supcon_loss
from carrot.functional.operator import summarize_stats
from carrot.functional.options import CEKLOptions, KLDirection, OperatorOptions, as_options
from carrot.memory import ClassMemory, carrot_ce_kl_loss, carrot_operator, carrot_supcon_loss

__all__ = ["CarrotCEKLLoss", "CarrotSupConLoss", "CarrotTransform", "KeepsStats", "SupConLoss"]


class KeepsStats(nn.Module):
    """Base of the modules that keep the operator's statistics of their last call in
    ``last_stats`` and summarize them with :meth:`summary`."""

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


class CarrotTransform(KeepsStats):
    """The CARROT operator as a module: ``forward(z, y) -> z⁺``.

    Keeps the statistics of the last call in ``last_stats`` (detached tensors) and summarizes
    them with :meth:`summary`. See :func:`carrot.functional.carrot_operator`.

    Args:
        options: The operator's options (:class:`~carrot.functional.OperatorOptions`);
            default: the guide's formulas.
        memory: Optional :class:`~carrot.memory.ClassMemory` (a submodule: it moves with the
            module and is saved in its state dict).

    Example:
        >>> transform = CarrotTransform(OperatorOptions(max_gamma=1.5))
        >>> z_plus = transform(F.normalize(z, dim=1), y)
        >>> transform.summary(sync=True)["gamma_mean"]
    """

    def __init__(
        self, options: OperatorOptions | None = None, *, memory: ClassMemory | None = None
    ) -> None:
        super().__init__()
        self.options = as_options(options)
        self.memory = memory
        self.last_stats = None

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        """Args:
            z: Embeddings. Shape: (B, D).
            y: Integer class labels. Shape: (B,).

        Returns:
            z⁺. Shape: (B, D).
        """
        z_plus, self.last_stats = carrot_operator(z, y, options=self.options, memory=self.memory)
        return z_plus

    def extra_repr(self) -> str:
        return repr(self.options)


class CarrotCEKLLoss(KeepsStats):
    """CE + λ·KL CARROT regularization: ``forward(z, y, classifier) -> loss``.

    ``CarrotCEKLLoss(options, *, memory, T, lam, ...)``: the operator's options first, as on
    :class:`CarrotTransform`, then the loss's own: a :class:`~carrot.functional.CEKLOptions`
    (``loss_options``) and/or its fields as keywords, which replace those of ``loss_options``
    (see :func:`carrot.functional.carrot_ce_kl_loss`). The stats of the last call (operator
    statistics and loss parts) are in ``last_stats``.
    """

    def __init__(
        self,
        options: OperatorOptions | None = None,
        *,
        memory: ClassMemory | None = None,
        T: float | None = None,
        lam: float | None = None,
        kl_direction: KLDirection | None = None,
        aux_ce_weight: float | None = None,
        stop_grad_plus: bool | None = None,
        label_smoothing: float | None = None,
        loss_options: CEKLOptions | None = None,
    ) -> None:
        super().__init__()
        given = dict(
            T=T,
            lam=lam,
            kl_direction=kl_direction,
            aux_ce_weight=aux_ce_weight,
            stop_grad_plus=stop_grad_plus,
            label_smoothing=label_smoothing,
        )
        base = loss_options if loss_options is not None else CEKLOptions()
        self.loss_options = base.replace(**{k: v for k, v in given.items() if v is not None})
        self.options = as_options(options)
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
            z,
            y,
            classifier,
            loss_options=self.loss_options,
            options=self.options,
            memory=self.memory,
        )
        return loss

    def extra_repr(self) -> str:
        return f"loss_options={self.loss_options!r}, options={self.options!r}"


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


class CarrotSupConLoss(KeepsStats):
    """SupCon with z and its CARROT expansion as two views: ``forward(z, y) -> loss``.

    See :func:`carrot.functional.carrot_supcon_loss`; statistics in ``last_stats``.
    """

    def __init__(
        self,
        options: OperatorOptions | None = None,
        *,
        memory: ClassMemory | None = None,
        temperature: float = 0.1,
        gather_global: bool = False,
        stop_grad_plus: bool = False,
    ) -> None:
        super().__init__()
        _check_temperature("temperature", temperature)
        self.temperature = temperature
        self.gather_global = gather_global
        self.stop_grad_plus = stop_grad_plus
        self.options = as_options(options)
        self.memory = memory
        self.last_stats = None

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        loss, self.last_stats = carrot_supcon_loss(
            z,
            y,
            temperature=self.temperature,
            gather_global=self.gather_global,
            stop_grad_plus=self.stop_grad_plus,
            options=self.options,
            memory=self.memory,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, gather_global={self.gather_global}, "
            f"stop_grad_plus={self.stop_grad_plus}, options={self.options!r}"
        )
