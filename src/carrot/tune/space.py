"""Search spaces: what ``carrot tune`` may change, and over which values.

Each method declares its own tunable settings in its plug-in file, as the class attribute
``search_space`` (keys relative to its config section, or dotted keys for other sections):

    class CARROT(Method):
        search_space = space({"lam": Float(0.1, 10.0, log=True), "T": Float(1.0, 4.0)})

Every method also gets :data:`SHARED_SPACE` (learning rate, weight decay), the same for all, so
that no method is tuned harder than another. ``BASE+ADDED`` searches the union of its parts'.
A ``--space FILE`` (:func:`carrot.tune.search.load_space_file`) replaces, narrows or drops any of
them. This module imports neither Optuna nor the config (the methods import it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Union

__all__ = [
    "SHARED_SPACE",
    "Choice",
    "Float",
    "Int",
    "Spec",
    "method_space",
    "space",
]


def _check_range(key: str, low: float, high: float, *, log: bool) -> None:
    """A :class:`Float` or :class:`Int` range: finite, non-empty, and > 0 if log-scaled."""
    finite = all(isinstance(v, int) or math.isfinite(v) for v in (low, high))  # ints always are
    if not finite or low >= high:
        raise ValueError(f"{key} must be a non-empty range low < high, got [{low}, {high}].")
    if log and low <= 0:
        raise ValueError(f"{key} is log-scaled, so its low must be > 0, got {low}.")


@dataclass(frozen=True)
class Float:
    """A real setting drawn from [low, high], uniformly or (``log``) log-uniformly."""

    low: float
    high: float
    log: bool = False

    def check(self, key: str) -> None:
        _check_range(key, self.low, self.high, log=self.log)

    def ends(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def describe(self) -> str:
        return f"{'log-' if self.log else ''}uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Int:
    """An integer setting drawn from low..high (both included)."""

    low: int
    high: int
    log: bool = False

    def check(self, key: str) -> None:
        _check_range(key, self.low, self.high, log=self.log)

    def ends(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def describe(self) -> str:
        return f"integer {self.low}..{self.high}{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class Choice:
    """A setting drawn from a few values (e.g. ISDA's λ₀ from the authors' 0.5 and 7.5)."""

    choices: tuple[Any, ...]

    def check(self, key: str) -> None:
        if len(self.choices) == 0:
            raise ValueError(f"{key} must offer at least one choice, got none.")
        if len(set(map(repr, self.choices))) < len(self.choices):
            raise ValueError(f"{key} lists a choice twice: {list(self.choices)}.")

    def ends(self) -> tuple[Any, ...]:
        return self.choices

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


Spec = Union[Float, Int, Choice]  # noqa: UP007 (the alias must run on Python 3.10's isinstance)


def space(specs: Mapping[str, Spec]) -> Mapping[str, Spec]:
    """A method's ``search_space``, read-only (it is shared by every instance)."""
    return MappingProxyType(dict(specs))


SHARED_SPACE: dict[str, Spec] = {
    "train.lr": Float(1e-3, 0.2, log=True),
    "train.weight_decay": Float(1e-5, 1e-3, log=True),
}
"""The training settings every method is tuned over, with the same ranges for all (SGD-sized
learning rates: narrow them with ``--space`` for AdamW)."""

_OPEN_SECTIONS = ("train", "model", "data")


def _declared(cls: type) -> dict[str, Spec]:
    declared = getattr(cls, "search_space", None)
    if declared is None:
        raise ValueError(
            f"method {cls.name!r} declares no search_space (set it in its plug-in file, "  # type: ignore[attr-defined]
            "{} for the shared settings only; see docs/tuning.md)."
        )
    section = cls.section_name()  # type: ignore[attr-defined]
    out: dict[str, Spec] = {}
    for key, spec in declared.items():
        if "." not in key and section is None:
            raise ValueError(
                f"method {cls.name!r}: search_space key {key!r} needs its section (it has none "  # type: ignore[attr-defined]
                "of its own), e.g. carrot.lam."
            )
        out[key if "." in key else f"{section}.{key}"] = spec
    return out


def method_space(spec: str) -> dict[str, Spec]:
    """The search space of ``method=SPEC``: :data:`SHARED_SPACE` and what the method declares
    (for ``BASE+ADDED``, every part's)."""
    from carrot.methods import get_method

    cls = get_method(spec)
    out = dict(SHARED_SPACE)
    for part in getattr(cls, "parts_", ()) or (cls,):
        out.update(_declared(part))
    return out


def _sections(method: str) -> set[str]:
    from carrot.methods import get_method

    cls = get_method(method)
    own = {s for s in (cls.section_name(), *cls.uses) if s}
    return own | set(_OPEN_SECTIONS)


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 0.1}`` → ``{"train": {"lr": 0.1}}`` (what a config file holds)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out
