"""Loading the experiment config: defaults, a YAML file, ``key=value`` overrides.

Precedence: dataclass defaults < ``--config FILE`` < command-line ``section.key=value``. The
layers are merged as plain data (:class:`carrot.train.merge.Merge`: unknown keys and wrong types
are errors that name the key; the keys the user set come out of the merge), then the typed
objects are built and validated once (:func:`build_config`; each setting's range on its field,
the rules that tie settings together in :func:`carrot.train.validation.validate`). The resolved
config is written to the run folder. The schema is :mod:`carrot.train.schema`; the methods'
sections come from :mod:`carrot.methods`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from carrot.methods import sections
from carrot.methods.carrot import CarrotSettings as CarrotConfig
from carrot.methods.supcon import SupConSettings as SupConConfig
from carrot.train.merge import MOVED_KEYS, RETIRED_ZERO_KEYS, Merge, parse_scalar
from carrot.train.schema import (
    RESOLVED_DATA_KEYS,
    SCHEMA_SECTIONS,
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
    "RETIRED_ZERO_KEYS",
    "CarrotConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "Range",
    "SupConConfig",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "config_from_dict",
    "config_to_dict",
    "flatten",
    "load_config",
    "parse_scalar",
    "save_config",
]


def build_config(values: dict[str, Any], explicit: set[str]) -> Config:
    """The typed config of merged ``values`` (every setting by dotted key, as
    :class:`~carrot.train.merge.Merge` holds them), built and validated once."""
    top: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, name = key.partition(".")
        if name:
            parts.setdefault(head, {})[name] = copy.deepcopy(value)
        else:
            top[head] = value
    schema = {name: cls(**parts.get(name, {})) for name, cls in SCHEMA_SECTIONS.items()}
    methods = {name: cls(**parts.get(name, {})) for name, cls in sections().items()}
    cfg = Config(**top, **schema, sections=methods, explicit=set(explicit))
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """A config from nested mappings (as read from YAML), over ``base`` or the defaults; a new,
    validated config (``base`` is left as it was)."""
    merge = Merge(base if base is not None else Config())
    merge.layer(data)
    return build_config(merge.values, merge.explicit)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``cfg`` with ``section.key=value`` strings applied (values parsed as YAML scalars): a
    new, validated config (``cfg`` is left as it was)."""
    merge = Merge(cfg)
    merge.overrides(overrides)
    return build_config(merge.values, merge.explicit)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then the overrides; built and validated once, at the end."""
    merge = Merge(Config())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist.")
        try:
            data = load_yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {yaml_error(e)}.") from e
        try:
            merge.layer(data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e
    merge.overrides(overrides or [])
    return build_config(merge.values, merge.explicit)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
