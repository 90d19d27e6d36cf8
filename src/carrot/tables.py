"""Text from users' files (class names, labels, image paths) made safe for the tables the project
writes: CSV cells a spreadsheet would run as formulas, markdown cells that would split a row."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["csv_cell", "csv_row", "md_cell"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def csv_cell(value: Any) -> Any:
    """``value``, with a quote in front when it is text a spreadsheet would read as a formula
    (starts with ``= + - @``, a tab or a line break; OWASP's CSV-injection rule). Numbers, and
    text that is just a number (``-1``), are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`csv_cell` of every value of ``row``."""
    return {k: csv_cell(v) for k, v in row.items()}


def md_cell(text: object) -> str:
    """``text`` as one markdown table cell: ``|`` escaped, line breaks as spaces."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").splitlines())
