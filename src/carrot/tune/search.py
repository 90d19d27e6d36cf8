"""The search spaces of a tuning: each method's own (:mod:`carrot.tune.space`), changed by a
``--space FILE`` and checked against the config (kept apart from the specs, which the methods
import: the config imports the methods)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from carrot.tune.space import Choice, Float, Int, Spec, _sections, method_space, nest

__all__ = ["check_space", "load_space_file", "spaces_for"]


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
