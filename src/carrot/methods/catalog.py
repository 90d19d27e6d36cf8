"""What ``carrot methods`` prints: every registered method with its description, reference,
baseline, needs and settings (defaults, ranges, docs), as rows or JSON."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from carrot.methods.base import Method, registered
from carrot.settings import field_docs, field_ranges

__all__ = ["catalog", "format_catalog", "markdown_rows", "markdown_table"]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    args = typing.get_args(tp)
    if args:
        return " | ".join(_type_name(a) for a in args)
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _settings(cls: type[Method]) -> list[dict[str, Any]]:
    section, settings = cls.section_name(), cls.settings_type
    if section is None or settings is None:
        return []
    hints = typing.get_type_hints(settings)
    docs, ranges = field_docs(settings), field_ranges(settings)
    defaults = settings()
    return [
        {
            "key": f"{section}.{f.name}",
            "type": _type_name(hints[f.name]),
            "default": getattr(defaults, f.name),
            "range": ranges[f.name].describe() if f.name in ranges else None,
            "doc": docs.get(f.name, ""),
        }
        for f in dataclasses.fields(settings)
    ]


def catalog() -> list[dict[str, Any]]:
    """One mapping per registered method (listing order)."""
    return [
        {
            "name": name,
            "description": cls.description,
            "reference": cls.reference,
            "baseline": cls.baseline,
            "section": cls.section_name(),
            "reads": list(cls.uses),
            "needs_hard_labels": cls.hard_labels,
            "min_images_per_class": cls.min_per_class,
            "min_classes_per_batch": cls.min_classes,
            "mixes_inputs": cls.mixes_inputs,
            "addable": cls.addable,
            "expands": cls.expands,
            "logs": list(cls.logs),
            "settings": _settings(cls),
        }
        for name, cls in registered().items()
    ]


def format_catalog(as_json: bool = False) -> str:
    """``carrot methods`` output: a readable listing, or JSON for scripts."""
    rows = catalog()
    if as_json:
        return json.dumps(rows, indent=2, ensure_ascii=False)
    lines = []
    for m in rows:
        extra = " (addable: method=X+" + m["name"] + ")" if m["addable"] else ""
        lines.append(f"{m['name']}: {m['description']}{extra}")
        lines.append(f"    reference: {m['reference']}")
        lines.append(f"    baseline: {m['baseline'] or '-- (a baseline)'}")
        needs = [f"train.k >= {m['min_images_per_class']}"] if m["min_images_per_class"] > 1 else []
        if m["min_classes_per_batch"] > 1:
            needs.append(f"{m['min_classes_per_batch']} classes per batch")
        if m["mixes_inputs"]:
            needs.append("mixes images (soft targets; cannot take +carrot)")
        if needs:
            lines.append(f"    needs: {', '.join(needs)}")
        if m["reads"]:
            lines.append(f"    reads the sections: {', '.join(m['reads'])}")
        for s in m["settings"]:
            rule = f", {s['range']}" if s["range"] else ""
            lines.append(
                f"    {s['key']} = {s['default']!r} ({s['type']}{rule}) {s['doc']}".rstrip()
            )
    return "\n".join(lines)


def markdown_rows() -> dict[str, str]:
    """Each registered method's row of README's method table, by name."""
    return {
        m["name"]: f"| `{m['name']}` | {m['description']} | {m['reference']} | "
        + (f"`{m['baseline']}` |" if m["baseline"] else "— |")
        for m in catalog()
    }


def markdown_table() -> str:
    """``carrot methods --markdown``: README's method table, generated from the registry."""
    head = "| method | what | reference | baseline |\n|---|---|---|---|"
    return "\n".join([head, *markdown_rows().values()])
