"""A finished run's files as the bench report reads them (``summary.json``, ``metrics.jsonl``),
checked before anything is written: valid JSON, no ``NaN``/``Infinity``, accuracies in
[0, 100]. A bad file is one line naming it, not a traceback halfway through a report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = ["MAX_SECONDS", "read_records", "read_saved_config", "read_summary"]

MAX_SECONDS = 1e9
"""Largest believable training time of one epoch or run (about 30 years)."""

_PERCENT = re.compile(r"(?:^|_)(?:top\d+|acc|precision_at_\d+|map_at_r)(?:_|$)")
"""Metrics in percent: top1, top5, mean_class_acc, precision_at_1, map_at_r, top1_ema..."""


class _NotFinite(ValueError):
    pass


def _constant(name: str) -> float:
    raise _NotFinite(name)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf
        raise _NotFinite(text)
    return value


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float)
    except _NotFinite as e:
        raise ValueError(
            f"{where} holds the non-finite number {e}; the run is broken. Delete its folder and "
            "rerun the grid (or leave it out with --seeds/--methods/--datasets)."
        ) from None
    except (ValueError, RecursionError) as e:
        raise ValueError(
            f"{where} is not valid JSON ({str(e)[:120]}); delete the run's folder and rerun it."
        ) from None


def _check(record: Any, where: str, prefix: str = "") -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(record).__name__}.")
    for key, value in record.items():
        if isinstance(value, dict):
            _check(value, where, f"{prefix}{key}.")
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if _PERCENT.search(key) and not (number and 0 <= value <= 100):
            rule = "in [0, 100] (a percentage)"
        elif not number:
            continue
        elif key in ("seconds", "total_seconds") and not 0 <= value <= MAX_SECONDS:
            rule = f"in [0, {MAX_SECONDS:g}] seconds"
        elif key in ("epoch", "epochs", "step") and not (isinstance(value, int) and value >= 0):
            rule = "an integer >= 0"
        else:
            continue
        raise ValueError(
            f"{where}: {prefix}{key} must be {rule}, got {value!r}; the run is broken. Delete its "
            "folder and rerun the grid."
        )
    return record


def _need(record: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(
            f"{where} has no {', '.join(missing)}; it was not written by a finished carrot run. "
            "Delete the run's folder and rerun it."
        )


def read_saved_config(path: Path) -> Any:
    """A run's saved ``config.yaml``, read by the one YAML reader; its errors name the file."""
    import yaml

    from carrot.yamlfile import load_yaml, yaml_error

    try:
        return load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {yaml_error(e)}.") from e


def read_summary(run: Path, *, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """``run/summary.json``, checked, with ``keys`` required."""
    path = run / "summary.json"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason}).") from None
    summary = _check(_loads(text, str(path)), str(path))
    _need(summary, keys, str(path))
    return summary


def read_records(run: Path) -> list[dict[str, Any]]:
    """The epochs of ``run/metrics.jsonl``, each checked; at least one evaluated (``top1``)."""
    path = run / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason}).") from None
    records = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            where = f"{path} line {i}"
            record = _check(_loads(line, where), where)
            _need(
                record,
                ("epoch", "seconds", *(("mean_class_acc",) if "top1" in record else ())),
                where,
            )
            records.append(record)
    if not any("top1" in r for r in records):
        raise ValueError(
            f"{path} has no evaluated epoch (no top1); delete the run's folder and rerun it."
        )
    return records
