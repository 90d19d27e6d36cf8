"""CARROT statistics across ranks.

The geometry code is the same for one process and many (:func:`carrot.functional.class_geometry`);
this module only decides what it sees: the labels of all ranks (to agree on the global class list)
and per-class sums added over ranks. Communication per step is the global batch's labels plus
(C + C·D) numbers for C classes present in the global batch, independent of the dataset's class
count.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistributedReducer",
    "all_gather_with_grad",
    "all_reduce_sum",
    "ddp_loss_scale",
    "default_reducer",
    "global_batch_size",
    "is_distributed",
]


def is_distributed(group: Any = None) -> bool:
    """Whether ``torch.distributed`` is initialized with more than one rank in ``group``."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        # out = Σ_s x_s on every rank, so ∂(Σ_r L_r)/∂x_s = Σ_r ∂L_r/∂out.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum(x: Tensor, group: Any = None) -> Tensor:
    """Sum of ``x`` over ranks; differentiable (the gradient of each rank's input is the sum of
    all ranks' output gradients). Returns ``x`` unchanged when not distributed."""
    if not is_distributed(group):
        return x
    if x.requires_grad:
        return _AllReduceSum.apply(x, group)
    out = x.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


def _gather_sizes(n: int, device: torch.device, group: Any) -> list[int]:
    return _gather_header(torch.tensor([n], dtype=torch.long, device=device), group)[0]


def _gather_header(header: Tensor, group: Any) -> tuple[list[int], Tensor]:
    """All-gathers a small int64 vector whose first entry is the local batch size: returns every
    rank's size (read on the host) and the gathered headers, shape (W, len(header))."""
    world = dist.get_world_size(group)
    parts = [torch.empty_like(header) for _ in range(world)]
    dist.all_gather(parts, header.contiguous(), group=group)
    headers = torch.stack(parts)
    return [int(s) for s in headers[:, 0].tolist()], headers


def _gather_padded(x: Tensor, sizes: list[int], group: Any) -> list[Tensor]:
    """all_gather for tensors whose first dimension differs between ranks."""
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded.contiguous(), group=group)
    return [o[:s] for o, s in zip(out, sizes, strict=True)]


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int], rank: int, group: Any) -> Tensor:
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        return torch.cat(_gather_padded(x, sizes, group))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        # Every rank's loss depends on this rank's slice: sum the slice's gradient over ranks.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


def all_gather_with_grad(x: Tensor, group: Any = None) -> tuple[Tensor, int]:
    """Concatenation of ``x`` over ranks (sizes may differ) and the offset of the local rows.

    Differentiable: the gradient reaching this rank's rows is the sum, over ranks, of the
    gradients of their copies, i.e. the gradient of the sum of all ranks' losses. Returns
    ``(x, 0)`` when not distributed.

    Args:
        x: Local tensor. Shape: (B, ...).

    Returns:
        ``(gathered, offset)``; ``gathered`` has shape (ΣB, ...).
    """
    if not is_distributed(group):
        return x, 0
    sizes = _gather_sizes(x.shape[0], x.device, group)
    rank = dist.get_rank(group)
    offset = sum(sizes[:rank])
    if x.requires_grad:
        return _AllGatherWithGrad.apply(x, sizes, rank, group), offset
    return torch.cat(_gather_padded(x, sizes, group)), offset


def global_batch_size(n: int, device: torch.device | str = "cpu", group: Any = None) -> int:
    """The batch size summed over ranks (``n`` when not distributed); one small collective."""
    if not is_distributed(group):
        return n
    return sum(_gather_sizes(n, torch.device(device), group))


def ddp_loss_scale(n: int, device: torch.device | str = "cpu", group: Any = None) -> float:
    """Factor that turns a rank's mean loss into the share that makes DDP match one process.

    DDP averages gradients over the W ranks. If rank r's loss is its local mean over ``n`` samples
    times ``W · n / N`` (N the global batch), the averaged gradient equals the gradient of the
    mean loss over the concatenated batch, also when ranks have different batch sizes and when
    gradients cross ranks through CARROT's statistics or a global SupCon. With equal batch sizes
    the factor is 1. Returns 1.0 when not distributed.
    """
    if not is_distributed(group):
        return 1.0
    return dist.get_world_size(group) * n / global_batch_size(n, device, group)


class DistributedReducer:
    """Makes :func:`carrot.functional.class_geometry` see the global batch.

    Labels are all-gathered (uneven local sizes are fine) so that every rank builds the same
    class list; per-class sums are all-reduced with an autograd-aware sum, so that gradients of
    non-detached statistics reach every rank that contributed. Every rank must call the
    operator the same number of times per step, as with any collective.
    """

    def __init__(self, group: Any = None) -> None:
        if not is_distributed(group):
            raise RuntimeError(
                "DistributedReducer needs torch.distributed initialized with world size > 1; "
                "call torch.distributed.init_process_group first, or use local statistics."
            )
        self.group = group
        self.rank = dist.get_rank(group)

    def gather_labels(self, y: Tensor, exponent: Tensor) -> tuple[Tensor, int, Tensor]:
        # The scale exponent travels with the batch size: no extra collective.
        header = torch.stack([torch.tensor(y.shape[0], device=y.device), exponent.long()])
        sizes, headers = _gather_header(header, self.group)
        labels = torch.cat(_gather_padded(y, sizes, self.group))
        return labels, sum(sizes[: self.rank]), headers[:, 1].max().to(exponent.dtype)

    def sum(self, x: Tensor) -> Tensor:
        return all_reduce_sum(x, self.group)

    def gather(self, x: Tensor) -> Tensor:
        return all_gather_with_grad(x, self.group)[0]


def default_reducer(group: Any = None) -> DistributedReducer | None:
    """A :class:`DistributedReducer` when running distributed with more than one rank, else
    ``None`` (no collective is ever called in a single process)."""
    return DistributedReducer(group) if is_distributed(group) else None
