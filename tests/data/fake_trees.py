"""Small writers for fake dataset trees: tiny JPEGs, index files and MATLAB files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

W, H = 24, 20  # default size of a fake image


def jpeg(
    path: Path, size: tuple[int, int] = (W, H), color: tuple[int, int, int] = (200, 40, 40)
) -> Path:
    """Write a solid-colour JPEG of ``size`` (width, height), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")
    return path


def lines(path: Path, rows: Iterable[str]) -> Path:
    """Write ``rows`` as the lines of a text file, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")
    return path


def set_line(path: Path, lineno: int, text: str) -> None:
    """Replace 1-based line ``lineno`` of a text file."""
    rows = path.read_text(encoding="utf-8").splitlines()
    rows[lineno - 1] = text
    lines(path, rows)


def del_line(path: Path, lineno: int) -> None:
    """Remove 1-based line ``lineno`` of a text file."""
    rows = path.read_text(encoding="utf-8").splitlines()
    del rows[lineno - 1]
    lines(path, rows)


def add_line(path: Path, text: str) -> None:
    """Append a line to a text file."""
    lines(path, [*path.read_text(encoding="utf-8").splitlines(), text])


def savemat(path: Path, variables: dict[str, Any]) -> Path:
    """Write a MATLAB file, creating parent folders."""
    from scipy.io import savemat as _savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    _savemat(path, variables)
    return path


def garbage(path: Path) -> Path:
    """Overwrite a file with bytes no reader accepts."""
    path.write_bytes(b"this is not an image nor a MATLAB file\n")
    return path
