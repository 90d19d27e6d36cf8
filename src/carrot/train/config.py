"""Loading the experiment config: defaults, a YAML file, ``key=value`` overrides.

Precedence: dataclass defaults < ``--config FILE`` < command-line ``section.key=value``. Unknown keys
and wrong types are errors that name the key; the config is validated once it is built
(:func:`carrot.train.validation.validate`) and the resolved config is written to the run folder.
The schema is :mod:`carrot.train.schema`; the methods' sections come from :mod:`carrot.methods`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from carrot.methods.carrot import CarrotSettings as CarrotConfig
from carrot.methods.supcon import SupConSettings as SupConConfig
from carrot.train.schema import (
    RENAMED_KEYS,
    RESOLVED_DATA_KEYS,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    config_to_dict,
    flatten,
)
from carrot.train.validation import RANGES, Range, validate
from carrot.yamlfile import load_yaml, yaml_error

__all__ = [
    "MOVED_KEYS",
    "RANGES",
    "RESOLVED_DATA_KEYS",
    "CarrotConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "Range",
    "SupConConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "flatten",
    "load_config",
    "parse_scalar",
    "save_config",
]

MOVED_KEYS = {"train.label_smoothing": "label_smoothing.smoothing"}
"""Keys of earlier versions that moved to a method's section: still read, saved at the new place."""

RETIRED_ZERO_KEYS = ("train.mixup", "train.cutmix")
"""Keys of earlier versions that could only be 0 (saved configs hold them): 0 is accepted."""


# --- typed assignment ---------------------------------------------------------------------------


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


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to ``tp`` where unambiguous (command-line strings), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in options:
                return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}.")
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
            return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        raise ConfigError(f"{key} must be {_type_name(tp)}, e.g. [0.5, 0.5, 0.5], got {value!r}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _number_text(key, value, tp)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer of 400 digits: beyond every range
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__}).")


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


def _fields(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _top_level(cfg: Config) -> dict[str, Any]:
    """The top-level keys: the schema's, then the methods' sections."""
    fields = {k: v for k, v in _fields(cfg).items() if k not in ("sections", "explicit")}
    return {**fields, **{name: type(s) for name, s in cfg.sections.items()}}


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


def _assign(cfg: Config, path: list[str], value: Any) -> None:
    """Set the dotted key ``path`` of ``cfg`` (typed; a mapping sets a section's keys) and
    record the keys set in ``cfg.explicit``."""
    key = ".".join(path)
    if key in MOVED_KEYS:
        path = MOVED_KEYS[key].split(".")
    elif key in RETIRED_ZERO_KEYS:
        _retired(key, value)
        return
    elif len(path) == 1 and path[0] == "train" and isinstance(value, dict):
        for sub, v in value.items():  # a train section may hold the moved or retired keys
            _assign(cfg, ["train", str(sub)], v)
        return
    top = _top_level(cfg)
    name = path[0]
    if name not in top:
        raise _unknown("", name, list(top))
    obj: Any = cfg.sections[name] if name in cfg.sections else cfg
    if obj is not cfg:
        if len(path) == 1:
            if not isinstance(value, dict):
                raise ConfigError(f"{name} is a section; set its keys, e.g. {name}.<key>=<value>.")
            for sub, v in value.items():
                _assign(cfg, [name, str(sub)], v)
            return
        _set(obj, path[1:], value, name + ".", cfg.explicit)
        return
    _set(cfg, path, value, "", cfg.explicit)


def _set(obj: Any, path: list[str], value: Any, prefix: str, explicit: set[str]) -> None:
    fields = {k: v for k, v in _fields(obj).items() if k not in ("sections", "explicit")}
    name = path[0]
    key = f"{prefix}{name}"
    if key in RENAMED_KEYS:
        raise ConfigError(f"{key} was renamed: use {RENAMED_KEYS[key]}.")
    if name not in fields:
        raise _unknown(prefix.rstrip("."), name, list(fields))
    tp = fields[name]
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current):
        if len(path) == 1:
            if not isinstance(value, dict):
                raise ConfigError(f"{key} is a section; set its keys, e.g. {key}.<key>=<value>.")
            for sub, v in value.items():
                _set(current, [str(sub)], v, key + ".", explicit)
            return
        _set(current, path[1:], value, key + ".", explicit)
        return
    if len(path) > 1:
        if typing.get_origin(tp) is dict:
            current = dict(current)
            node = current
            for part in path[1:-1]:
                node = node.setdefault(part, {}) if isinstance(node, dict) else node
            if not isinstance(node, dict):
                raise ConfigError(f"{key}.{'.'.join(path[1:-1])} is a value, not a mapping.")
            node[path[-1]] = value
            setattr(obj, name, current)
            explicit.add(key)
            return
        raise ConfigError(f"{key} is not a section; set it with {key}=<value>.")
    setattr(obj, name, _coerce(key, value, tp))
    explicit.add(key)


def parse_scalar(text: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def _assign_dict(cfg: Config, data: Any) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}.")
    for name, value in data.items():
        _assign(cfg, [str(name)], value)


def _assign_overrides(cfg: Config, overrides: list[str]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"overrides must look like section.key=value, got {item!r}.")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has no key before '='.")
        _assign(cfg, key.split("."), parse_scalar(text))


def config_from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """A config from nested mappings (as read from YAML), over ``base`` or the defaults;
    validated."""
    cfg = base if base is not None else Config()
    _assign_dict(cfg, data)
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars); validated."""
    _assign_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then the overrides; validated once, at the end."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist.")
        try:
            data = load_yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {yaml_error(e)}.") from e
        try:
            _assign_dict(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e
    _assign_overrides(cfg, overrides or [])
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
