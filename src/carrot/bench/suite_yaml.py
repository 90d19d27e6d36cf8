"""The checks behind the bench's YAML files (suites, --methods-file): mappings with known keys,
names, ``key=value`` overrides, and the packaged files' location."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any


def _where(source: str, key: str) -> str:
    return f"{source}: {key}" if key else source


def _check_keys(data: Any, valid: Sequence[str], source: str, key: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(
            f"{_where(source, key)} must be a mapping, got {type(data).__name__} ({data!r})."
        )
    unknown = sorted(set(map(str, data)) - set(valid))
    if unknown:
        raise ValueError(
            f"{_where(source, key)} has unknown key(s) {unknown}; valid keys: {', '.join(valid)}."
        )
    return data


def _mapping(data: Any, source: str, key: str) -> dict[str, Any]:
    """A mapping of names (None: empty)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{_where(source, key)} must be a mapping of names, got {type(data).__name__} ({data!r})."
        )
    return {str(k): v for k, v in data.items()}


def _value_text(value: Any) -> str:
    """A YAML value as the text of a ``key=value`` override (parsed back as YAML)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _overrides(data: Any, source: str, key: str) -> tuple[str, ...]:
    if data is None:
        return ()
    if isinstance(data, dict):
        return tuple(f"{k}={_value_text(v)}" for k, v in data.items())
    if isinstance(data, list) and all(isinstance(x, str) and "=" in x for x in data):
        return tuple(data)
    raise ValueError(
        f"{_where(source, key)} must be a list of key=value strings or a mapping of keys to "
        f"values, got {data!r}."
    )


def _names(data: Any, source: str, key: str) -> tuple[str, ...]:
    if isinstance(data, str):
        return (data,)
    if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
        return tuple(data)
    raise ValueError(f"{_where(source, key)} must be a non-empty list of names, got {data!r}.")


def _read_yaml(text: str, source: str) -> Any:
    import yaml

    from carrot.yamlfile import load_yaml, yaml_error

    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{source} is not valid YAML: {yaml_error(e)}.") from e


def _resources() -> Any:
    return resources.files("carrot.bench")
