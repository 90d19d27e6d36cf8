"""Numerical helpers of the CARROT functions: input checks, the compute dtype, autocast, and the
exact power-of-two rescaling that keeps squared norms of any finite input inside the float range."""

from __future__ import annotations

import contextlib
import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_batch", "compute_dtype", "no_autocast", "safe_normalize"]

# Embeddings are rescaled (by a power of two, exactly) only when their largest magnitude lies
# outside [2^-30, 2^30]: squared norms of D <= 2^20 such values stay far inside float32's range.
_SCALE_FREE_EXPONENT = 30

def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are computed in: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _wide(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 if it is float64: losses are never computed in half."""
    return x.to(compute_dtype(x.dtype))


def check_batch(z: Tensor, y: Tensor) -> None:
    """Raises ``ValueError`` unless ``z`` is a (B, D) float tensor and ``y`` (B,) integer labels."""
    if not isinstance(z, Tensor) or z.ndim != 2 or not z.is_floating_point():
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        dtype = z.dtype if isinstance(z, Tensor) else None
        raise ValueError(
            f"z must be a floating-point tensor of shape (B, D), got shape {shape} and dtype "
            f"{dtype}; flatten or pool your features to one vector per image first."
        )
    if (
        not isinstance(y, Tensor)
        or y.ndim != 1
        or y.is_floating_point()
        or y.is_complex()
        or y.dtype == torch.bool
    ):
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        dtype = y.dtype if isinstance(y, Tensor) else None
        raise ValueError(
            f"y must be an integer tensor of class indices with shape (B,), got shape {shape} "
            f"and dtype {dtype}; pass hard labels (soft or one-hot targets have no class geometry)."
        )
    if y.shape[0] != z.shape[0]:
        raise ValueError(
            f"z and y must hold the same number of samples, got z of shape {tuple(z.shape)} "
            f"and y of shape {tuple(y.shape)}."
        )
    if y.device != z.device:
        raise ValueError(f"z and y must be on the same device, got {z.device} and {y.device}.")


def no_autocast(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Disables autocast where it is on (entering the context costs more than checking)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


# The exponent of a batch with no data (empty, or all zeros): below any real one, so that under
# DDP an empty rank does not outvote the others' tiny embeddings; read as 0 after the max.
_NO_DATA = -(2**30)


def _exponent(x: Tensor) -> Tensor:
    """e such that ``x * 2^-e`` has its largest magnitude inside [2^-30, 2^30] (0 when it already
    has; :data:`_NO_DATA` when ``x`` is empty or all zero). A 0-d int32 tensor; no host sync on
    a GPU (on a CPU, reading a number back is free, and fewer ops are faster)."""
    if x.numel() == 0:
        return torch.full((), _NO_DATA, dtype=torch.int32, device=x.device)
    if _eager_cpu(x):
        return torch.tensor(_cpu_exponent(x), dtype=torch.int32)
    amax = torch.linalg.vector_norm(x, ord=math.inf)
    _, e = torch.frexp(amax)
    e = e - e.clamp(-_SCALE_FREE_EXPONENT, _SCALE_FREE_EXPONENT)
    return torch.where(amax == 0, _NO_DATA, e).to(torch.int32)


def _cpu_exponent(x: Tensor) -> int:
    """:func:`_exponent` as a Python int, for a CPU tensor outside torch.compile."""
    if x.numel() == 0:
        return _NO_DATA
    # aminmax is several times faster than the inf-norm on a CPU.
    lo, hi = torch.aminmax(x.detach() if x.requires_grad else x)
    # tolist reads a 0-d tensor as a Python number without a dispatched op.
    value = max(-cast(float, lo.tolist()), cast(float, hi.tolist()))
    if value == 0.0 or not math.isfinite(value):
        return _NO_DATA if value == 0.0 else 0
    exp = math.frexp(value)[1]
    return exp - max(-_SCALE_FREE_EXPONENT, min(_SCALE_FREE_EXPONENT, exp))


def _eager_cpu(x: Tensor) -> bool:
    """On a CPU, outside torch.compile, reading a number back costs nothing: data-dependent
    shortcuts are worth taking there (a compiled graph must not branch on data)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _ldexp(x: Tensor, e: Tensor) -> Tensor:
    """x · 2^e, exact, for any e a float of x's dtype can reach: float64's 2^e itself overflows
    beyond |e| = 1023, so there it is applied in two halves."""
    if x.dtype == torch.float64:
        half = torch.div(e, 2, rounding_mode="floor")
        return torch.ldexp(torch.ldexp(x, half.to(x.dtype)), (e - half).to(x.dtype))
    return torch.ldexp(x, e.to(x.dtype))


def _exponent_range(dtype: torch.dtype) -> tuple[int, int]:
    """Exponents e with 2^-e a normal number of ``dtype`` (float32: -125..128)."""
    info = torch.finfo(dtype)
    return math.frexp(info.tiny)[1], math.frexp(info.max)[1]


def safe_normalize(x: Tensor) -> Tensor:
    """L2-normalized rows, correct for any finite input: each row is first scaled by a power of two
    (exact) so that its squared norm cannot overflow (rows beyond ~1.8e19 in float32) or
    underflow. Equal to ``F.normalize(x, dim=1)`` wherever that is finite, bit for bit.

    Args:
        x: Shape: (B, D).
    """
    lo, hi = _exponent_range(x.dtype)  # 2^-e must itself be representable
    if x.dtype == torch.float64:  # the largest magnitude: squares could leave float64's range
        norm = torch.linalg.vector_norm(x.detach(), ord=math.inf, dim=1, keepdim=True)
        _, e = torch.frexp(norm)  # (B, 1)
        return F.normalize(torch.ldexp(x, -e.clamp(lo, hi).to(x.dtype)), dim=1)
    # The row norm in float64, where no square of a float32 leaves the range: one fused
    # reduction, several times faster on a CPU than the inf-norm. Its exponent by log2 (frexp of
    # a float64 trips Inductor's CPU code generation); 2^e is within a factor 2 of the norm.
    norm = torch.linalg.vector_norm(x.detach(), dim=1, keepdim=True, dtype=torch.float64)
    e = torch.log2(norm).ceil_().to(x.dtype)  # (B, 1); -inf for a zero row, clamped below
    return F.normalize(torch.ldexp(x, e.clamp_(lo, hi).neg_()), dim=1)


def _to_input_dtype(x: Tensor, dtype: torch.dtype, *, rescaled: bool = True) -> Tensor:
    """Cast to the input dtype, saturating at its largest finite value instead of inf (a finite
    input whose expansion lies beyond the dtype's range comes back finite). In the same dtype,
    only an expansion computed in rescaled units can exceed the range: below 2^30 it cannot."""
    big = torch.finfo(dtype).max
    if x.dtype == dtype:
        if not rescaled:
            return x
        return x.clamp(-big, big) if x.requires_grad else x.clamp_(-big, big)
    return x.clamp_(-big, big).to(dtype)


def _is_one(scale: Tensor | float) -> bool:
    return isinstance(scale, float) and scale == 1.0


