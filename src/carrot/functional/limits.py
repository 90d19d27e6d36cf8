"""One clear error when a pairwise matrix of the operator does not fit in memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["pairwise_memory"]


@contextlib.contextmanager
def pairwise_memory(
    what: str, rows: int, cols: int, dtype: torch.dtype, hint: str
) -> Iterator[None]:
    """Turn an allocator failure inside the block into a one-line ``ValueError`` that names the
    ``rows × cols`` matrix that did not fit, its size, and what to do (``hint``). Costs nothing
    when the allocation succeeds (no size check on the hot path)."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        text = str(e)
        if not isinstance(e, (torch.OutOfMemoryError, MemoryError)) and (
            "alloc" not in text.lower() and "out of memory" not in text.lower()
        ):
            raise
        size = rows * cols * torch.empty((), dtype=dtype).element_size()
        raise ValueError(
            f"{what} of {rows} × {cols} ({size / 2**30:.1f} GiB as {dtype}) does not fit in memory; "
            f"{hint}"
        ) from e
