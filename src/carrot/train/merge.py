"""The merge of a config's layers as plain data: the defaults, then a YAML file's mapping, then
``key=value`` overrides, into one flat mapping of dotted keys (``{"carrot.max_gamma": 1.5}``).

Each value the user writes is checked against its field's type on the way in (an error names
the key); the keys the user layers set are the merge's ``explicit`` set. Building the typed
objects and validating them is :func:`carrot.train.config.build_config`, once, after the merge.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal

import yaml

from carrot.methods import sections
from carrot.train.schema import RENAMED_KEYS, SCHEMA_SECTIONS, Config, ConfigError, schema_fields
from carrot.yamlfile import load_yaml

__all__ = ["MOVED_KEYS", "RETIRED_ZERO_KEYS", "Merge", "parse_scalar"]

MOVED_KEYS = {"train.label_smoothing": "label_smoothing.smoothing"}
"""Keys of earlier versions that moved to a method's section: still read, saved at the new place."""

RETIRED_ZERO_KEYS = ("train.mixup", "train.cutmix")
"""Keys of earlier versions that could only be 0 (saved configs hold them): 0 is accepted."""


def parse_scalar(text: str) -> Any:
    """A command-line value as YAML reads it (``1e-3`` a float, ``null`` None), else the text."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is dict:
        return "a mapping"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce_union(key: str, value: Any, tp: Any) -> Any:
    options = typing.get_args(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
        if type(None) in options:
            return None
    for option in options:
        if option is type(None):
            continue
        try:
            return coerce(key, value, option)
        except ConfigError:
            continue
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}.")


def _coerce_scalar(key: str, value: Any, tp: Any) -> Any:
    """``value`` as ``tp`` (bool, int, float, str), or ``dataclasses.MISSING``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
    elif tp is int or tp is float:
        try:
            if number and (tp is float or isinstance(value, int)):
                return tp(value)
        except OverflowError:  # an integer of 400 digits as a float: beyond every range
            raise ConfigError(f"{key} must be a finite number, got {value!r}.") from None
        _number_text(key, value, tp)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and all(v is None for v in value.values()):
            quoted = "{" + ",".join(map(str, value)) + "}"  # {train.lr} read as {'train.lr': None}
            raise ConfigError(
                f"{key} must be a string, got the YAML mapping {value!r}: a value starting with "
                f"'{{' is read as a mapping; quote it, e.g. {key}='{quoted}'."
            )
        if number:
            return str(value)
    return dataclasses.MISSING


def _number_text(key: str, value: Any, tp: Any) -> None:
    """A string that Python would read as a number (``"0.5"``, ``1_000``) is not one under the
    YAML 1.2 rules of the configs: say how to write it rather than guess."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return
        raise ConfigError(
            f"{key} must be {_type_name(tp)}, got the string {value!r}; write a plain number "
            "(no quotes, no '_' between digits), e.g. 0.5 or 1000."
        )


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to ``tp`` where unambiguous (command-line strings), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(key, value, tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}.")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key} must be a mapping, got {value!r}.")
    if origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp)
            return [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        raise ConfigError(f"{key} must be {_type_name(tp)}, e.g. [0.5, 0.5, 0.5], got {value!r}.")
    out = _coerce_scalar(key, value, tp)
    if out is dataclasses.MISSING:
        raise ConfigError(
            f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})."
        )
    return out


def _unknown(key: str, name: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = f"in {key}" if key else "at the top level"
    return ConfigError(
        f"unknown config key {name!r} {where}.{hint} Valid keys {where}: {', '.join(sorted(valid))}."
    )


def _retired(key: str, value: Any) -> None:
    """``train.mixup`` / ``train.cutmix`` of earlier versions: 0 is read (and dropped)."""
    v = parse_scalar(value) if isinstance(value, str) else value
    if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0):
        return
    raise ConfigError(
        "train.mixup and train.cutmix are not supported: mixed images have soft labels, and "
        "CARROT's per-class statistics (and the P×K batch) need one hard label per image. "
        f"Train with method=mixup or method=cutmix instead (got {key}={value!r})."
    )


def _section_types() -> dict[str, dict[str, Any]]:
    """Every section's keys and types: the schema's (data, model, train), then the methods'."""
    out: dict[str, dict[str, Any]] = {name: {} for name in SCHEMA_SECTIONS}
    for name, settings in sections().items():
        hints = typing.get_type_hints(settings)
        out[name] = {f.name: hints[f.name] for f in dataclasses.fields(settings)}
    return out


class Merge:
    """The merged layers: ``values`` (every setting by dotted key, free-form mappings such as
    ``data.options`` as one value) and ``explicit`` (the keys the user layers set)."""

    def __init__(self, base: Config) -> None:
        fields = schema_fields()
        self.top = {k: tp for k, (_, tp) in fields.items() if "." not in k}
        self.sections = _section_types()
        for key, (_, tp) in fields.items():
            if "." in key:
                section, name = key.split(".")
                self.sections[section][name] = tp
        self.values: dict[str, Any] = {k: getattr(base, k) for k in self.top}
        registered = sections()
        for section, names in self.sections.items():
            if section in SCHEMA_SECTIONS:
                obj = getattr(base, section)
            else:  # a section registered after ``base`` was built starts at its defaults
                obj = base.sections.get(section) or registered[section]()
            self.values.update({f"{section}.{n}": copy.deepcopy(getattr(obj, n)) for n in names})
        self.explicit: set[str] = set(base.explicit)

    def layer(self, data: Any) -> None:
        """Merge a nested mapping (a YAML file's, a saved config's)."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}.")
        for name, value in data.items():
            self.assign([str(name)], value)

    def overrides(self, items: list[str]) -> None:
        """Merge ``section.key=value`` strings (values parsed as YAML scalars)."""
        for item in items:
            if "=" not in item:
                raise ConfigError(f"overrides must look like section.key=value, got {item!r}.")
            key, text = item.split("=", 1)
            key = key.strip()
            if not key:
                raise ConfigError(f"override {item!r} has no key before '='.")
            self.assign(key.split("."), parse_scalar(text))

    def assign(self, path: list[str], value: Any) -> None:
        """Set the dotted key ``path`` (typed; a mapping sets a section's keys)."""
        key = ".".join(path)
        if key in MOVED_KEYS:
            path = MOVED_KEYS[key].split(".")
        elif key in RETIRED_ZERO_KEYS:
            _retired(key, value)
            return
        name = path[0]
        if name in self.top:
            if len(path) > 1:
                raise ConfigError(f"{name} is not a section; set it with {name}=<value>.")
            self._set(name, value, self.top[name])
            return
        if name not in self.sections:
            raise _unknown("", name, [*self.top, *self.sections])
        if len(path) == 1:
            if not isinstance(value, dict):
                raise ConfigError(f"{name} is a section; set its keys, e.g. {name}.<key>=<value>.")
            for sub, v in value.items():
                self.assign([name, str(sub)], v)
            return
        key = f"{name}.{path[1]}"
        if key in RENAMED_KEYS:
            raise ConfigError(f"{key} was renamed: use {RENAMED_KEYS[key]}.")
        types_ = self.sections[name]
        if path[1] not in types_:
            raise _unknown(name, path[1], list(types_))
        tp = types_[path[1]]
        if len(path) == 2:
            self._set(key, value, tp)
        elif typing.get_origin(tp) is dict:
            self._set_inside(key, path[2:], value)
        else:
            raise ConfigError(f"{key} is not a section; set it with {key}=<value>.")

    def _set(self, key: str, value: Any, tp: Any) -> None:
        self.values[key] = coerce(key, value, tp)
        self.explicit.add(key)

    def _set_inside(self, key: str, path: list[str], value: Any) -> None:
        """``data.options.a.b=1``: one entry of a free-form mapping, the others kept."""
        current = copy.deepcopy(self.values[key])
        node = current
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node
        if not isinstance(node, dict):
            raise ConfigError(f"{key}.{'.'.join(path[:-1])} is a value, not a mapping.")
        node[path[-1]] = value
        self.values[key] = current
        self.explicit.add(key)
