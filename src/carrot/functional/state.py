"""The ``memory=`` argument of the operator and the CARROT losses, one rule for all four.

A :class:`~carrot.functional.nearest.Remembered` snapshot is only read. A
:class:`~carrot.memory.ClassMemory` is read, then updated with the batch's class statistics
(in training mode only), as ``F.batch_norm`` updates the running statistics it is given: so
``carrot.carrot_operator`` and ``carrot.functional.carrot_operator`` are one function.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, runtime_checkable

from carrot.functional.nearest import Remembered

__all__ = ["ClassMemoryLike", "MemoryArg", "read_memory", "update_memory"]


@runtime_checkable
class ClassMemoryLike(Protocol):
    """What the functions need of a :class:`~carrot.memory.ClassMemory` (a protocol, so that
    this package does not import ``carrot.memory``, which imports it)."""

    def remembered(self) -> Remembered | None: ...

    def update_from(self, stats: dict[str, Any]) -> Any: ...


MemoryArg: TypeAlias = "ClassMemoryLike | Remembered | None"


def read_memory(memory: MemoryArg) -> tuple[Remembered | None, ClassMemoryLike | None]:
    """``(snapshot to read, memory to update after the batch)``.

    Raises:
        ValueError: ``memory`` is neither a ClassMemory, a Remembered nor None.
    """
    if memory is None or isinstance(memory, Remembered):
        return memory, None
    if isinstance(memory, ClassMemoryLike):
        return memory.remembered(), memory
    raise ValueError(
        "memory must be a ClassMemory, a Remembered (ClassMemory.remembered(), read only) or "
        f"None, got {type(memory).__name__}."
    )


def update_memory(owner: ClassMemoryLike | None, stats: dict[str, Any]) -> dict[str, Any]:
    """Blends the batch into ``owner``; ``stats["memory_skipped"]`` counts refused classes."""
    if owner is not None:
        stats["memory_skipped"] = owner.update_from(stats)
    return stats
