"""Search spaces: what ``carrot tune`` may change, and over which values.

Each method declares its own tunable settings in its plug-in file, as the class attribute
``search_space`` (keys relative to its config section, or dotted keys for other sections):

    class CARROT(Method):
        search_space = space({"lam": Float(0.1, 10.0, log=True), "T": Float(1.0, 4.0)})

Every method also gets :data:`SHARED_SPACE` (learning rate, weight decay), the same for all, so
that no method is tuned harder than another. ``BASE+ADDED`` searches the union of its parts'.
A ``--space FILE`` (:func:`load_space_file`) replaces, narrows or drops any of them. This module
does not import Optuna (the methods import it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union

__all__ = [
    "SHARED_SPACE",
    "Choice",
    "Float",
    "Int",
    "Spec",
    "check_space",
    "load_space_file",
    "method_space",
    "space",
    "spaces_for",
]


@dataclass(frozen=True)
class Float:
    """A real setting drawn from [low, high], uniformly or (``log``) log-uniformly."""

    low: float
    high: float
    log: bool = False

    def check(self, key: str) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(
                f"{key} must be a non-empty range low < high, got [{self.low}, {self.high}]."
            )
        if self.log and self.low <= 0:
            raise ValueError(f"{key} is log-scaled, so its low must be > 0, got {self.low}.")

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
        if self.low >= self.high:
            raise ValueError(
                f"{key} must be a non-empty range low < high, got [{self.low}, {self.high}]."
            )
        if self.log and self.low <= 0:
            raise ValueError(f"{key} is log-scaled, so its low must be > 0, got {self.low}.")

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


def check_space(method: str, space: Mapping[str, Spec], base: Any = None) -> None:
    """Raises ``ValueError`` (one line) unless every key of ``space`` is a setting of ``method``
    (its sections, train, model or data) and every end of its range or each choice is a value
    the config accepts on top of ``base`` (default: the trainer's defaults)."""
    from carrot.train.config import Config, config_from_dict

    sections = _sections(method)
    for key, spec in space.items():
        if not isinstance(spec, (Float, Int, Choice)):
            raise ValueError(
                f"{method}: search space {key} must be Float, Int or Choice, got {spec!r}."
            )
        spec.check(f"{method}: {key}")
        if key.split(".")[0] not in sections or "." not in key:
            raise ValueError(
                f"{method}: {key} is not one of its settings; tunable keys are in the sections "
                f"{', '.join(sorted(sections))} (e.g. train.lr)."
            )
        for value in spec.ends():
            cfg = copy.deepcopy(base) if base is not None else Config()
            try:
                config_from_dict(nest({"method": method, key: value}), base=cfg)
            except ValueError as e:
                raise ValueError(f"{method}: search space {key}={value!r}: {e}") from e


def _spec(key: str, value: Any, old: Spec | None, where: str) -> Spec:
    if isinstance(value, (list, tuple)):
        return Choice(tuple(value))
    if not isinstance(value, dict):
        raise ValueError(
            f"{where}: {key} must be {{low, high[, log]}}, {{choices: [...]}}, a list or null, "
            f"got {value!r}."
        )
    if "choices" in value:
        extra = set(value) - {"choices"}
        if extra or not isinstance(value["choices"], list):
            raise ValueError(f"{where}: {key} must be {{choices: [...]}} alone, got {value!r}.")
        return Choice(tuple(value["choices"]))
    unknown = set(value) - {"low", "high", "log"}
    if unknown or not {"low", "high"} <= set(value):
        raise ValueError(f"{where}: {key} needs low and high (and optionally log), got {value!r}.")
    low, high = value["low"], value["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"{where}: {key}'s low and high must be numbers, got {value!r}.")
    log = bool(value.get("log", old.log if isinstance(old, (Float, Int)) else False))
    if isinstance(old, Int) or (old is None and isinstance(low, int) and isinstance(high, int)):
        return Int(int(low), int(high), log=log)
    return Float(float(low), float(high), log=log)


def load_space_file(path: str | Path, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Read ``--space FILE``: ``{all | METHOD: {KEY: {low, high[, log]} | {choices} | [..] | null}}``
    (null drops a key from the search). Returns the changes by method ("all" included)."""
    from carrot.yamlfile import load_yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--space file {p} does not exist.")
    try:
        data = load_yaml(p.read_text()) or {}
    except Exception as e:  # a YAML error's message spans lines
        raise ValueError(f"--space file {p} is not valid YAML: {' '.join(str(e).split())}.") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"--space file {p} must map all or a method name to settings, got {data!r}."
        )
    for name, changes in data.items():
        if name != "all" and name not in methods:
            raise ValueError(
                f"--space file {p}: {name!r} is neither all nor one of the tuned methods "
                f"({', '.join(methods)})."
            )
        if not isinstance(changes, dict):
            raise ValueError(
                f"--space file {p}: {name} must map setting keys to ranges, got {changes!r}."
            )
    return data


def spaces_for(
    methods: Sequence[str],
    changes: Mapping[str, Mapping[str, Any]] | None = None,
    base: Any = None,
    *,
    where: str = "--space",
) -> dict[str, dict[str, Spec]]:
    """Each method's search space: its own, then ``changes["all"]``, then ``changes[method]``;
    every result checked with :func:`check_space` against ``base``."""
    out: dict[str, dict[str, Spec]] = {}
    for method in methods:
        space = method_space(method)
        for scope in ("all", method):
            for key, value in (changes or {}).get(scope, {}).items():
                key = str(key)
                if value is None:
                    if key not in space:
                        raise ValueError(
                            f"{where}: {method} does not search {key}, so it cannot drop it."
                        )
                    del space[key]
                else:
                    space[key] = _spec(key, value, space.get(key), where)
        check_space(method, space, base)
        out[method] = space
    return out
