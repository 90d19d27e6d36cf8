"""What a setting is: a dataclass field with a default, a docstring and, for a number, a range;
for the trainer's schema also whether a resumed run may change it.

Shared by the trainer's schema (:mod:`carrot.train.schema`) and every method's settings
(:mod:`carrot.methods`), so that a setting is declared in one place, its field: the default,
the docstring right after it (:func:`field_docs`), ``metadata["range"]`` (:func:`ranged`,
enforced by :func:`check_ranges`) and ``metadata["resumable"]`` (:func:`setting`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_WEIGHT",
    "TEMPERATURE",
    "WEIGHT",
    "Range",
    "check_ranges",
    "field_docs",
    "field_ranges",
    "ranged",
    "setting",
]


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric setting: lo <= x (lo < x if ``open_lo``), likewise hi;
    every bound finite, so inf and nan are refused too."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def contains(self, x: float) -> bool:
        try:
            x = float(x)
        except OverflowError:  # an integer beyond float's range is beyond every bound
            return False
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.open_lo else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.open_hi else x > self.hi))

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.open_lo else "[", ")" if self.open_hi else "]"
            return f"in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{'>' if self.open_lo else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.open_hi else '<='} {self.hi:g}"
        return "a finite number"


MAX_WEIGHT = 1e4
"""Largest weight of a loss term: far above any useful value (the papers' are below 10), and far
below where the weighted loss or its gradient overflows (``1e300`` made inf at step 1)."""

WEIGHT = Range(0, MAX_WEIGHT)
"""The range of a loss term's weight."""

TEMPERATURE = Range(1e-3, 1e3)
"""The range of a softmax temperature: logits / T overflow for T near 0 (``1e-300`` gave inf),
and T² (the KL weight of distillation) for large T."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    range: Range | None = None,
    resumable: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with everything about it but its docstring: its default (or
    ``default_factory``), the range its values must lie in, and whether ``carrot train --resume``
    may change it (``resumable``: the run stays the same run)."""
    metadata: dict[str, Any] = {}
    if range is not None:
        metadata["range"] = range
    if resumable:
        metadata["resumable"] = True
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def ranged(default: Any, rule: Range) -> Any:
    """A dataclass field with a default and the range its values must lie in."""
    return setting(default, range=rule)


def field_ranges(settings: Any) -> dict[str, Range]:
    """The ranges declared on the fields of a settings dataclass (class or instance)."""
    return {
        f.name: f.metadata["range"] for f in dataclasses.fields(settings) if "range" in f.metadata
    }


def check_ranges(settings: Any, *, prefix: str = "") -> None:
    """Raises ``ValueError`` naming the first field outside its declared range (``None`` and
    booleans are left to the type checks)."""
    for name, rule in field_ranges(settings).items():
        value = getattr(settings, name)
        for v in value if isinstance(value, list) else [value]:
            if v is None or isinstance(v, bool):
                continue
            if not isinstance(v, (int, float)) or not rule.contains(v):
                raise ValueError(f"{prefix}{name} must be {rule.describe()}, got {value}.")


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings (the string right after a field) of a dataclass and its bases,
    joined onto one line: the documentation ``carrot methods`` and the docs show."""
    import ast
    import inspect
    import itertools
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs
