"""Bounds on every count a user writes: one argument may not imply unbounded work.

A count (``--jobs``, ``--batch-size``, ``train.epochs``, a seed range, a grid of methods ×
datasets × seeds) is checked against what it implies *before* anything is allocated or started:
``--seeds 0-99999999`` is a one-line error, not a 100-million-element list. The caps are far
above any real use and far below what would exhaust a machine.
"""

from __future__ import annotations

__all__ = [
    "MAX_CELLS",
    "MAX_SEED",
    "MAX_SEEDS",
    "check_count",
    "check_grid_size",
    "parse_seeds",
]

MAX_SEEDS = 10_000
"""Seeds in one bench grid (a suite's ``seeds``, ``--seeds``)."""
MAX_SEED = 2**63 - 1
"""The largest seed (the config's ``seed`` range; torch's generators take 64-bit seeds)."""
MAX_CELLS = 100_000
"""Runs in one bench grid (datasets × methods × seeds)."""


def check_count(value: int | None, name: str, *, lo: int = 1, hi: int) -> int | None:
    """``value`` if it is None or an integer in ``[lo, hi]``; else a one-line ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}.")
    return value


def _seed(text: str, name: str, whole: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 19:  # 19 digits already exceed MAX_SEED's scale
        raise ValueError(f"{name} must look like 0-4 or 0,2,5 (seeds >= 0), got {whole!r}.")
    value = int(text)
    if value > MAX_SEED:
        raise ValueError(f"{name} must hold seeds in [0, 2**63 - 1], got {whole!r}.")
    return value


def parse_seeds(text: str, name: str = "--seeds", cap: int = MAX_SEEDS) -> list[int]:
    """``0-4``, ``0,2,5`` or ``0-4,10-14``: the seeds, counted before any list is built, so
    that a range of more than ``cap`` seeds is one line. A seed listed twice is refused (it
    would be the same run twice)."""
    spans: list[tuple[int, int]] = []
    total = 0
    for part in text.split(","):
        if not part.strip():
            continue
        lo_text, dash, hi_text = part.partition("-")
        lo = _seed(lo_text, name, text)
        hi = _seed(hi_text, name, text) if dash else lo
        if hi < lo:
            raise ValueError(f"{name} must have ranges LO-HI with LO <= HI, got {text!r}.")
        total += hi - lo + 1
        if total > cap:
            raise ValueError(
                f"{name} must name at most {cap} seeds, got {text!r} ({total} or more): each "
                "seed is a full run of every cell."
            )
        spans.append((lo, hi))
    if not spans:
        raise ValueError(f"{name} must look like 0-4 or 0,2,5 (seeds >= 0), got {text!r}.")
    seeds = [s for lo, hi in spans for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{name} must not name a seed twice, got {text!r}.")
    return seeds


def check_grid_size(cells: int, what: str) -> None:
    """A grid of ``cells`` runs (counted, not built) must not exceed :data:`MAX_CELLS`."""
    if cells > MAX_CELLS:
        raise ValueError(
            f"the grid must hold at most {MAX_CELLS} runs, got {cells} ({what}); restrict it "
            "with --seeds, --datasets or --methods."
        )
