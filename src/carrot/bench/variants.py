"""The methods a bench can run: the trainer's (every registered method and any composition
``BASE+ADDED``), the packaged named variants (``carrot/bench/methods.yaml``) and those of a
``--methods-file`` or a suite's ``variants``, each with the baseline it is compared with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carrot.bench.chains import check_baseline_chain
from carrot.bench.suite_yaml import (
    _check_keys,
    _mapping,
    _overrides,
    _read_yaml,
    _resources,
    _where,
)
from carrot.methods import MethodError, get_method, registered
from carrot.paths import plain_name

__all__ = [
    "TRAINER_METHODS",
    "MethodSpec",
    "load_methods",
    "packaged_methods",
    "parse_methods",
    "trainer_method",
    "trainer_methods",
]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str
    baseline: str | None
    """The method it is compared with (same seeds); None for a baseline."""
    overrides: tuple[str, ...]


def trainer_method(spec: str) -> MethodSpec:
    """``method=SPEC`` of the trainer as a bench method: its label and baseline from the registry
    (a composition ``BASE+ADDED`` is compared with BASE). Raises ``ValueError`` for a name that
    is not a method or a combination that cannot be defined."""
    cls = get_method(spec)
    return MethodSpec(spec, cls.label_for(), cls.baseline, (f"method={spec}",))


def trainer_methods() -> dict[str, MethodSpec]:
    """Every registered method as ``method=NAME``, nothing else: the carrot section is whatever
    the suite's pins and the base config leave it at (by default the recommended configuration,
    γ capped at 1.5)."""
    return {name: trainer_method(name) for name in registered()}


TRAINER_METHODS: dict[str, MethodSpec] = trainer_methods()
"""The registered methods when the bench was imported (see :func:`trainer_methods`)."""


def _with_composed(known: dict[str, MethodSpec], name: str) -> bool:
    """Adds ``name`` to ``known`` if it is a composition of registered methods (``A+B``)."""
    if name in known or "+" not in name:
        return name in known
    try:
        known[name] = trainer_method(name)
    except MethodError as e:
        raise ValueError(str(e)) from e
    return True


_METHOD_KEYS = ("label", "baseline", "extends", "overrides")


def parse_methods(
    data: Any, source: str, *, known: Mapping[str, MethodSpec], key: str = ""
) -> dict[str, MethodSpec]:
    """Named variants from a mapping ``name: {label, baseline, extends, overrides}`` (a
    --methods-file, a suite's ``variants``; ``extends: OTHER`` starts from OTHER's overrides). A name may not repeat one of ``known``; a baseline must be a method
    of ``known`` or of the same mapping."""
    out: dict[str, MethodSpec] = {}
    for name, spec in _mapping(data, source, key).items():
        where = f"{key}.{name}" if key else str(name)
        plain_name(name, f"{_where(source, where)}: the method name")
        if name in known:
            raise ValueError(
                f"{_where(source, where)}: method {name!r} is already defined "
                f"({'by the trainer' if name in TRAINER_METHODS else 'elsewhere'}); choose another name."
            )
        spec = _check_keys(spec, _METHOD_KEYS, source, where)
        if "overrides" not in spec:
            raise ValueError(f"{_where(source, where)} needs overrides, e.g. {{method: carrot}}.")
        overrides = _overrides(spec["overrides"], source, f"{where}.overrides")
        if "extends" in spec:  # another variant's overrides, then these (later keys win)
            parent = out.get(spec["extends"]) or known.get(spec["extends"])
            if parent is None:
                raise ValueError(
                    f"{_where(source, where)}.extends must name a variant defined above it or a "
                    f"known method, got {spec['extends']!r}."
                )
            merged: dict[str, str] = dict(o.split("=", 1) for o in parent.overrides)
            merged.update(dict(o.split("=", 1) for o in overrides))
            overrides = tuple(f"{k}={v}" for k, v in merged.items())
        if not any(o.startswith("method=") for o in overrides):
            raise ValueError(
                f"{_where(source, where)}.overrides must set method (e.g. method: carrot); "
                "without it the variant would run whatever method the base config names."
            )
        baseline = spec.get("baseline")
        if baseline is not None and not isinstance(baseline, str):
            raise ValueError(f"{_where(source, where)}.baseline must be a method name or null.")
        out[str(name)] = MethodSpec(
            str(name),
            str(spec.get("label", name)),
            baseline,
            overrides,
        )
    everything = {**known, **out}
    for m in out.values():
        if m.baseline is not None and m.baseline not in everything:
            raise ValueError(
                f"{_where(source, f'{key}.{m.name}' if key else m.name)}: baseline {m.baseline!r} "
                f"is not a method; known methods: {', '.join(everything)}."
            )
    for m in out.values():  # a baseline chain must end (no self-reference, no cycle)
        check_baseline_chain(
            m.name,
            {k: v.baseline for k, v in everything.items()},
            _where(source, f"{key}.{m.name}" if key else m.name),
        )
    return out


def packaged_methods() -> dict[str, MethodSpec]:
    """The trainer's methods and the packaged named variants (``carrot/bench/methods.yaml``)."""
    text = (_resources() / "methods.yaml").read_text(encoding="utf-8")
    variants = parse_methods(
        _read_yaml(text, "methods.yaml"), "methods.yaml", known=TRAINER_METHODS
    )
    return {**TRAINER_METHODS, **variants}


def load_methods(path: str | Path | None) -> dict[str, MethodSpec]:
    """The packaged methods plus those of a ``--methods-file`` (if given)."""
    known = packaged_methods()
    if path is None:
        return known
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--methods-file {p} does not exist.")
    return {**known, **parse_methods(_read_yaml(p.read_text(), str(p)), str(p), known=known)}
