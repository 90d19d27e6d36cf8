"""The one YAML reader of every file the project reads (configs, suites, methods files, saved run
configs), with its errors as one line."""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "load_yaml", "yaml_error"]

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a file may have (a config needs three or four levels);
deeper is refused before PyYAML's recursive reader runs out of stack."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 core-schema scalars: only true/false are booleans (``amp: off`` stays the string
    'off'), ``1e-3`` is a float, integers are plain decimal, ``0o17`` or ``0x1F`` (``1_000``,
    ``0b11``, ``1:30`` and dates stay strings). Aliases (``*name``) are refused: a few hundred bytes
    of nested aliases expand to gigabytes (a "billion laughs"), and a config never needs them. A key
    twice in one mapping is refused too: PyYAML keeps the last one silently."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"found the alias *{event.anchor}; carrot configs do not accept YAML aliases, "
                "write the values out",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels; carrot files need a few",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"found the key {key!r} twice in one mapping (first on line "
                        f"{first.start_mark.line + 1}); YAML would keep only the last, so merge them",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_int(loader: _Loader, node: Any) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text)  # "017" is 17 in YAML 1.2, not octal


def _construct_float(loader: _Loader, node: Any) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith((".inf", ".nan")):
        return float(text.replace(".", ""))  # "-.inf" -> "-inf"
    return float(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml(text: str) -> Any:
    """``text`` read with :class:`_Loader`'s rules (YAML 1.2 scalars, no aliases, no repeated
    keys, at most :data:`MAX_DEPTH` levels); errors are ``yaml.YAMLError`` (see
    :func:`yaml_error`)."""
    return yaml.load(text, Loader=_Loader)


def yaml_error(e: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(e).split())
