"""Cells from users' names: CSV cells never start a spreadsheet formula, markdown cells never
split a table row (carrot.tables)."""

from __future__ import annotations

import pytest

from carrot.tables import csv_cell, csv_row, md_cell


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("=1+1", "'=1+1"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\t=x", "'\t=x"),
        ("-7", "-7"),  # a number written as text is not a formula
        ("+1.5e3", "+1.5e3"),
        ("gull", "gull"),
        ("a=b", "a=b"),
        (-3.5, -3.5),
        (None, None),
    ],
)
def test_csv_cell(value: object, shown: object) -> None:
    assert csv_cell(value) == shown


def test_csv_row_keeps_keys() -> None:
    assert csv_row({"=k": "=v", "n": 1}) == {"=k": "'=v", "n": 1}


@pytest.mark.parametrize(
    ("text", "shown"),
    [("a | b", "a \\| b"), ("two\nlines", "two lines"), ("back\\|", "back\\\\\\|")],
)
def test_md_cell(text: str, shown: str) -> None:
    assert md_cell(text) == shown
    assert md_cell(text).replace("\\\\", "").replace("\\|", "").count("|") == 0
