"""The CARROT expansion T_c(z) = μ_c + γ_c (z - μ_c) and its factor γ_c = max(1, m_c / (2 r_c + ε))
(the statistics come from :mod:`.geometry`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from carrot.functional.geometry import ClassGeometry, log_map
from carrot.functional.numerics import _is_one, _to_input_dtype, no_autocast, safe_normalize

__all__ = ["expand", "expand_angular", "expand_rows", "expansion_factors"]


def expansion_factors(
    geometry: ClassGeometry,
    *,
    eps: float = 1e-12,
    max_gamma: float | None = None,
    radius_factor: float = 2.0,
) -> Tensor:
    """The parameter-free expansion γ_c = max(1, m_c / (f · r_c + ε)), optionally capped.

    f is ``radius_factor`` (the guide's 2: two classes of radius r whose centroids are 2r apart
    just touch). γ_c is 1 for classes without spread (r_c is roundoff: expanding them would only
    scale roundoff by ~1e5), without another class in the batch (m_c = inf) and for unused slots.

    Args:
        geometry: Statistics from :func:`class_geometry`.
        eps: ε of the formula, in the embeddings' units.
        max_gamma: Upper bound on γ_c (``None``: no bound, the guide's formula).
        radius_factor: f in the formula (> 0; the guide's 2).

    Returns:
        γ_c. Shape: (C,).
    """
    m, r = geometry.m, geometry.r
    # m and r are in units of geometry.scale (often the float 1.0). A true division: eps / scale
    # with a Python float multiplies by 1/scale, which overflows for scale = 2^-1024.
    scale = geometry.scale
    eps_scaled: float | Tensor = eps
    if isinstance(scale, Tensor):
        eps_scaled = torch.full_like(scale, eps) / scale
    elif scale != 1.0:
        eps_scaled = eps / scale
    inactive = geometry.degenerate
    # A compact list of two or more classes, all of them real: every m_c is finite (no host sync).
    n = geometry.num_classes
    every_m_finite = isinstance(n, int) and n >= 2 and n == geometry.classes.shape[0]
    if not every_m_finite:
        no_other = m == float("inf")
        inactive = inactive | no_other
    if m.requires_grad or r.requires_grad:
        # No inf may reach the gradient of the unused branch (0 · inf is NaN); r > 0 there.
        if not every_m_finite:
            m = m.masked_fill(no_other, 0.0)
        ratio = m / (r * radius_factor + eps_scaled)
        return ratio.clamp(1.0, max_gamma).masked_fill(inactive, 1.0)
    ratio = m.div(r.mul(radius_factor).add_(eps_scaled))
    return ratio.clamp_(1.0, max_gamma).masked_fill_(inactive, 1.0)


def _coefficient(gamma_rows: Tensor, scale: Tensor | float) -> Tensor:
    """(γ - 1) · scale per row, as a column. Shape: (B, 1)."""
    coef = gamma_rows - 1.0
    if not _is_one(scale):
        coef = coef * scale
    return coef[:, None]


class _FrozenExpansion(torch.autograd.Function):
    """z + (γ - 1)·s·(z - μ)/s with μ and γ constants: the backward pass is a row scaling by γ.

    Writes the result into ``deviation`` (an internal buffer), so the step costs no new B×D
    tensor in the forward pass.
    """

    @staticmethod
    def forward(
        ctx: Any, z: Tensor, deviation: Tensor, gamma_rows: Tensor, scale: Tensor | float
    ) -> Tensor:
        ctx.save_for_backward(gamma_rows)
        out = torch.addcmul(
            z.to(deviation.dtype), deviation, _coefficient(gamma_rows, scale), out=deviation
        )
        return _to_input_dtype(out, z.dtype, rescaled=not _is_one(scale))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (gamma_rows,) = ctx.saved_tensors
        return (grad.to(gamma_rows.dtype) * gamma_rows[:, None]).to(grad.dtype), None, None, None


def expand_rows(
    z: Tensor, deviation: Tensor, gamma_rows: Tensor, scale: Tensor | float = 1.0
) -> Tensor:
    """z⁺ = z + (γ - 1)(z - μ) from precomputed deviations ``z - μ`` (see :func:`expand`).

    When neither ``deviation`` nor ``gamma_rows`` needs a gradient (detached statistics), the
    result is written into ``deviation``, which must not be used afterwards.

    Args:
        z: Embeddings. Shape: (B, D).
        deviation: z - μ_{y} in the compute dtype, in units of ``scale``. Shape: (B, D).
        gamma_rows: γ of each sample's class. Shape: (B,).
        scale: Units of ``deviation`` (see :class:`ClassGeometry`).

    Returns:
        z⁺ in ``z``'s dtype. Shape: (B, D).
    """
    with no_autocast(z.device.type):
        if not (deviation.requires_grad or gamma_rows.requires_grad):
            out: Tensor = _FrozenExpansion.apply(z, deviation, gamma_rows, scale)
            return out
        z_plus = torch.addcmul(z.to(deviation.dtype), _coefficient(gamma_rows, scale), deviation)
        return _to_input_dtype(z_plus, z.dtype, rescaled=not _is_one(scale))


def expand_angular(z: Tensor, inverse: Tensor, u: Tensor, gamma: Tensor) -> Tensor:
    """T_c on the unit sphere: ẑ⁺ = exp_u(γ_c · log_u(ẑ)), i.e. the angle to the mean direction
    u_c is multiplied by γ_c (capped at π) along the same great circle. Rows of classes with
    γ_c = 1 are returned unchanged; the others are unit vectors.

    Args:
        z: Embeddings (normalized here). Shape: (B, D).
        inverse: Class slot of each sample. Shape: (B,).
        u: Mean directions of the classes (unit). Shape: (C, D).
        gamma: Expansion factors. Shape: (C,).

    Returns:
        ẑ⁺ in ``z``'s dtype. Shape: (B, D).
    """
    with no_autocast(z.device.type):
        z_hat = safe_normalize(z.to(u.dtype))
        u_rows = u.index_select(0, inverse)
        g = gamma.index_select(0, inverse)
        v, theta = log_map(z_hat, u_rows)
        phi = (g * theta).clamp(max=math.pi)
        direction = v / torch.where(theta > 0, theta, 1.0)[:, None]  # unit tangent (0 at θ = 0)
        out = torch.cos(phi)[:, None] * u_rows + torch.sin(phi)[:, None] * direction
        out = torch.where((g == 1.0)[:, None], z.to(u.dtype), out)
        return _to_input_dtype(out, z.dtype, rescaled=False)  # unit vectors


def expand(z: Tensor, inverse: Tensor, mu: Tensor, gamma: Tensor) -> Tensor:
    """T_c(z) = μ_c + γ_c (z - μ_c), written as z + (γ_c - 1)(z - μ_c) so that γ_c = 1 returns z
    bit for bit.

    Computed in ``mu``'s dtype; the result has ``z``'s dtype, saturated at its largest finite
    value when that dtype is narrower (a finite input never comes back as inf).

    Args:
        z: Embeddings. Shape: (B, D).
        inverse: Class slot of each sample. Shape: (B,).
        mu: Centroids. Shape: (C, D).
        gamma: Expansion factors. Shape: (C,).

    Returns:
        The expanded embeddings z⁺. Shape: (B, D).
    """
    with no_autocast(z.device.type):
        deviation = z.to(mu.dtype) - mu.index_select(0, inverse)  # (B, D)
        return expand_rows(z, deviation, gamma.index_select(0, inverse))
