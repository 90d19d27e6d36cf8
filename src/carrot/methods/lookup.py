"""``method=SPEC`` → a method class: a registered name, or a composition ``BASE+ADDED[+...]``.

Composition is the plug-and-play claim made testable: ``center_loss+carrot`` trains center
loss's objective plus CARROT's term (:meth:`Method.term`) on the same batch, and the bench
compares it with ``center_loss`` (its baseline). A combination that cannot be defined is refused
here, before anything runs, with one line that says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from carrot.methods.base import (
    LossResult,
    Method,
    MethodContext,
    MethodError,
    Step,
    registered,
)

__all__ = ["Composed", "build_method", "default_method", "get_method", "method_names"]


def method_names() -> list[str]:
    """The registered methods' names (``carrot methods`` lists them)."""
    return list(registered())


def default_method() -> str:
    """The registered method that declares ``default = True`` (carrot)."""
    defaults = [name for name, cls in registered().items() if cls.default]
    if len(defaults) != 1:
        raise RuntimeError(
            f"exactly one registered method must set default = True, got {defaults}."
        )
    return defaults[0]


def _lookup(name: str) -> type[Method]:
    methods = registered()
    if name not in methods:
        raise MethodError(
            f"method must be one of {', '.join(map(repr, methods))} or BASE+ADDED (e.g. "
            f"ce+carrot), got {name!r}."
        )
    return methods[name]


class Composed(Method):
    """``BASE+ADDED``: BASE's input transform and loss, plus every ADDED method's term."""

    parts_: ClassVar[tuple[type[Method], ...]] = ()

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        first, *added = self.parts_
        self.base = first(context)
        self.added = nn.ModuleList([cls(context) for cls in added])

    @classmethod
    def label_for(cls, settings: Mapping[str, Any] | None = None) -> str:
        return " + ".join(part.label_for(settings) for part in cls.parts_)

    def transform(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.transform(x, y)

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        result = self.base.loss(z, logits, target, head, step=step)
        loss, parts, stats = result.loss, dict(result.parts), result.stats
        for method in self.added:
            term = method.term(z, logits, target, head, step=step)  # type: ignore[operator]
            loss = loss + term.loss
            parts.update(term.parts)
            stats = term.stats or stats  # the expansion's statistics, where there is one
        return LossResult(loss, parts, stats)

    def param_groups(self) -> list[dict[str, Any]]:
        groups = self.base.param_groups()
        for method in self.added:
            groups += method.param_groups()  # type: ignore[operator]
        return groups


_COMPOSED: dict[str, type[Method]] = {}


def _compose(spec: str) -> type[Method]:
    names = [n.strip() for n in spec.split("+")]
    if any(not n for n in names):
        raise MethodError(f"method {spec!r} has an empty name around '+'; write e.g. ce+carrot.")
    if len(set(names)) < len(names):
        raise MethodError(f"method {spec!r} names a method twice.")
    first, *added = [_lookup(n) for n in names]
    for cls in added:
        if not cls.addable:
            raise MethodError(
                f"method {spec!r}: {cls.name} cannot be added on top of another method (it is a "
                "whole objective, not a term); put it first or use it alone."
            )
        if cls.hard_labels and first.mixes_inputs:
            raise MethodError(
                f"method {spec!r} cannot be defined: {cls.name} needs one hard label per image "
                f"(its per-class statistics), and {first.name} mixes images, which then have two."
            )
    attrs: dict[str, Any] = {
        "name": spec,
        "description": " + ".join(c.description for c in (first, *added)),
        "reference": "; ".join(c.reference for c in (first, *added)),
        "baseline": first.name,
        "uses": tuple(
            dict.fromkeys(s for c in (first, *added) for s in (c.section_name(), *c.uses) if s)
        ),
        "hard_labels": any(c.hard_labels for c in (first, *added)),
        "min_per_class": max(c.min_per_class for c in (first, *added)),
        "min_classes": max(c.min_classes for c in (first, *added)),
        "mixes_inputs": first.mixes_inputs,
        "expands": any(c.expands for c in (first, *added)),
        "logs": tuple(dict.fromkeys(p for c in (first, *added) for p in c.logs)),
        "parts_": (first, *added),
    }
    return type(f"Composed[{spec}]", (Composed,), attrs)


def get_method(spec: str) -> type[Method]:
    """The method class of ``method=SPEC`` (a registered name or ``BASE+ADDED``), checked."""
    if not isinstance(spec, str):
        raise MethodError(f"method must be a string, got {spec!r}.")
    if "+" not in spec:
        return _lookup(spec)
    if spec not in _COMPOSED:
        _COMPOSED[spec] = _compose(spec)
    return _COMPOSED[spec]


def build_method(spec: str, context: MethodContext) -> Method:
    """The method of ``method=SPEC``, built once per run (then moved to the run's device)."""
    return get_method(spec)(context)
