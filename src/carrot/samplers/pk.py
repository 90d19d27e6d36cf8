"""P×K batch sampler: every batch holds P distinct classes with exactly K images each."""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["PKSampler"]


def _as_int(name: str, value: Any) -> int:
    """An integer argument as a Python int: numpy and torch integers are accepted, floats and
    bools are not (a float batch size is a mistake, not a rounding)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    return int(value)


class PKSampler(Sampler[list[int]]):
    """Batch sampler for ``DataLoader(dataset, batch_sampler=PKSampler(labels, ...))``.

    Every batch holds ``P = batch_size // k`` distinct classes with exactly ``k`` indices each,
    grouped by class (``k`` consecutive indices share a label).

    An epoch is one pass over the data: each class's images are shuffled and consumed ``k`` at a
    time, so nearly every image is seen once per epoch (pytorch-metric-learning's
    ``MPerClassSampler`` draws with replacement: an "epoch" of N samples sees 55–63% of the images).
    What is not seen:

    - A class with fewer than ``k`` images, or whose image count is not a multiple of ``k``,
      has its last group filled with repeats of its own images (never another class's).
    - A class can appear at most once per batch, so a class holding more than 1/P of all groups
      contributes at most one group per batch; its other images wait for a later epoch.
    - The last ``< P·W`` groups of the epoch that do not fill a batch are dropped.

    How groups become batches: classes are laid out in a random order, each as its run of
    groups; the layout is cut into ``P·W`` columns of ``L`` groups (``L`` is the number of
    batches) and each column is shuffled independently into the ``L`` batches, keeping a class
    that spans two columns out of any batch twice. Everything is vectorized numpy and depends
    only on ``(seed, epoch)``.

    Distributed: with ``num_replicas = W`` every rank builds the same epoch with ``P·W`` classes
    per step and takes its own ``P``; ranks hold disjoint classes at every step, all ranks have
    the same length, and the ranks' batches concatenated are exactly the batches of a single
    process with ``batch_size · W``.

    Resume: ``state_dict(consumed)`` / ``load_state_dict`` (or ``set_epoch(e, start_batch=n)``)
    restart the epoch at batch ``n``; the order is unchanged. Call ``set_epoch`` before every
    epoch, as with ``DistributedSampler``; otherwise every epoch repeats epoch 0's order.

    Args:
        labels: Class label of every dataset item (any integers). Shape: (N,).
        batch_size: Images per batch on each rank; a multiple of ``k``.
        k: Images per class in a batch (K).
        seed: Seed of the shuffles; all ranks must use the same.
        num_replicas: World size ``W``; defaults to ``torch.distributed``'s when initialized, else 1.
        rank: This rank; defaults to ``torch.distributed``'s when initialized, else 0.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        k: int = 4,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be a non-empty 1-D sequence of integer class labels, got shape "
                f"{labels.shape} and dtype {labels.dtype}."
            )
        k = _as_int("k", k)
        batch_size = _as_int("batch_size", batch_size)
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        if batch_size < k or batch_size % k:
            lower = max(k, batch_size // k * k)
            raise ValueError(
                f"batch_size must be a positive multiple of k={k}, got {batch_size!r}; "
                f"use {lower} or {lower + k}, or change k."
            )
        if num_replicas is not None:
            num_replicas = _as_int("num_replicas", num_replicas)
        if rank is not None:
            rank = _as_int("rank", rank)
        if num_replicas is None:
            dist_ok = dist.is_available() and dist.is_initialized()
            num_replicas = dist.get_world_size() if dist_ok else 1
        if rank is None:
            dist_ok = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if dist_ok else 0
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas!r}.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank!r}.")

        self.batch_size = batch_size
        self.k = k
        self.seed = int(seed)
        self.num_replicas = num_replicas
        self.rank = rank
        self.classes_per_batch = batch_size // k
        self._columns = self.classes_per_batch * num_replicas

        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        self.num_classes = counts.size
        if self.num_classes < self._columns:
            per_rank = f" on each of {num_replicas} ranks" if num_replicas > 1 else ""
            raise ValueError(
                f"batch_size={batch_size} with k={k} needs P={self.classes_per_batch} classes "
                f"per batch{per_rank} ({self._columns} distinct classes per step), but labels "
                f"hold only {self.num_classes} classes; lower batch_size or raise k."
            )
        self._inverse = inverse.astype(np.int64)
        self._counts = counts.astype(np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
        self._by_class = np.argsort(self._inverse, kind="stable")
        groups = -(-self._counts // k)
        # Batches per epoch: no class may hold more than one group per batch, so L solves
        # L = floor(Σ_c min(g_c, L) / P·W); iterating from above reaches the largest solution.
        length = int(groups.sum()) // self._columns
        while True:
            nxt = int(np.minimum(groups, length).sum()) // self._columns
            if nxt == length:
                break
            length = nxt
        self._length = length
        self._groups = np.minimum(groups, length)
        self.epoch = 0
        self._start_batch = 0
        self._yielded = 0

    def __len__(self) -> int:
        return self._length - self._start_batch

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        """Select the epoch's shuffle; ``start_batch`` skips that many batches (resume)."""
        if not 0 <= start_batch <= self._length:
            raise ValueError(f"start_batch must be in [0, {self._length}], got {start_batch!r}.")
        self.epoch = int(epoch)
        self._start_batch = start_batch
        self._yielded = start_batch

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Position to resume from: the epoch and the batches already consumed in it.

        With worker processes a ``DataLoader`` draws batches ahead of the training loop; pass
        the number of batches the loop consumed in this epoch as ``consumed`` then.
        """
        return {
            "epoch": self.epoch,
            "start_batch": self._yielded if consumed is None else int(consumed),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "k": self.k,
            "num_replicas": self.num_replicas,
            "num_batches": self._length,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the sampler must be built with the same settings."""
        for key in ("seed", "batch_size", "k", "num_replicas", "num_batches"):
            mine = self._length if key == "num_batches" else getattr(self, key)
            if key in state and state[key] != mine:
                raise ValueError(
                    f"cannot resume: the saved sampler has {key}={state[key]!r} but this one has "
                    f"{mine!r}; build the sampler with the saved settings and the same labels."
                )
        self.set_epoch(state["epoch"], start_batch=state["start_batch"])

    def epoch_batches(self, epoch: int | None = None) -> np.ndarray:
        """All batches of an epoch for every rank. Shape: (L, P·W, K), dataset indices."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch)])
        k, n_cols, length = self.k, self._columns, self._length

        # Shuffle within classes: random permutation, then a stable sort by class.
        perm = rng.permutation(self._inverse.size)
        shuffled = perm[np.argsort(self._inverse[perm], kind="stable")]

        # Lay out the classes in random order, each as g_c groups of k (wrapping into repeats
        # when the class has fewer than g_c·k images).
        order = rng.permutation(self.num_classes)
        groups = self._groups[order]
        slots = groups * k
        cls_of_slot = np.repeat(order, slots)
        first_slot = np.repeat(np.cumsum(slots) - slots, slots)
        within = np.arange(slots.sum()) - first_slot
        within %= self._counts[cls_of_slot]
        chunks = shuffled[self._starts[cls_of_slot] + within].reshape(-1, k)
        chunks = chunks[: length * n_cols]
        run_end = np.repeat(np.cumsum(groups), groups)[: length * n_cols]
        run_start = run_end - np.repeat(groups, groups)[: length * n_cols]

        # Deal columns of L consecutive groups into the L batches, each column in its own random
        # order. A class runs over at most two columns (g_c <= L); its groups at the head of a
        # column avoid the batches its groups at the tail of the previous column went to.
        table = np.empty((length, n_cols), dtype=np.int64)
        prev_rows = np.empty(0, dtype=np.int64)
        for col in range(n_cols):
            lo = col * length
            rows = rng.permutation(length)
            if col > 0 and run_end[lo - 1] > lo:
                tail = lo - max(int(run_start[lo - 1]), lo - length)
                head = min(int(run_end[lo - 1]), lo + length) - lo
                taken = np.zeros(length, dtype=bool)
                taken[prev_rows[length - tail :]] = True
                rows = rows[np.argsort(taken[rows], kind="stable")]
                rows[head:] = rng.permutation(rows[head:])
            table[rows, col] = np.arange(lo, lo + length)
            prev_rows = rows
        return chunks[table]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        p = self.classes_per_batch
        mine = batches[:, self.rank * p : (self.rank + 1) * p].reshape(self._length, -1)
        start, self._start_batch = self._start_batch, 0
        self._yielded = start
        for b in range(start, self._length):
            self._yielded = b + 1
            yield mine[b].tolist()
