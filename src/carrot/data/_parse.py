"""Shared readers for the official dataset layouts: whitespace-separated index files, MATLAB
``.mat`` files, dataset roots and options, all failing with a :class:`DatasetError` that names the
file (and the 1-based line or entry) and says what was expected."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from carrot.data.base import DatasetError

SPLITS = ("train", "test")
_FIX = "fix the file or extract the dataset archive again"


class Row(NamedTuple):
    """One non-blank line of an index file."""

    path: Path
    lineno: int  # 1-based, as an editor shows it
    text: str
    fields: tuple[str, ...]

    def error(self, problem: str) -> DatasetError:
        """A :class:`DatasetError` for this line: where it is, what is wrong, the line itself."""
        return DatasetError(
            f"{self.path}, line {self.lineno}: {problem}; the line reads {self.text!r}. "
            "Fix the file or extract the dataset archive again."
        )

    def int_field(self, column: int, name: str) -> int:
        """Field ``column`` as an integer; anything else is an error naming it ``name``."""
        value = self.fields[column]
        try:
            return int(value)
        except ValueError:
            raise self.error(f"{name} must be an integer, got {value!r}") from None


def read_lines(path: Path, *, expected: str) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers, stripped of surrounding space.

    Args:
        path: The file.
        expected: What the file holds, for the message when it is missing, e.g.
            ``"one line '<image_id> <class_id>' per image"``.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(
            f"index file {path} does not exist (expected {expected}); check that data.root points "
            "at the extracted dataset (see docs/datasets.md)."
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read index file {path}: {e}; {_FIX}.") from e
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    return [(n, line) for n, line in lines if line]


def read_rows(path: Path, columns: Sequence[str], *, rest: bool = False) -> list[Row]:
    """Parse a whitespace-separated index file with one record per line.

    Args:
        path: The file.
        columns: Field names, used in messages: ``("image_id", "class_id")``.
        rest: The last field is the rest of the line and may contain spaces (class names, paths).

    Raises:
        DatasetError: The file is missing or unreadable, or a line has the wrong number of fields.
    """
    form = " ".join(f"<{c}>" for c in columns)
    rows = []
    for n, line in read_lines(path, expected=f"one line '{form}' per entry"):
        fields = line.split(maxsplit=len(columns) - 1) if rest else line.split()
        row = Row(path, n, line, tuple(fields))
        if len(fields) != len(columns):
            raise row.error(f"expected {len(columns)} fields '{form}', found {len(fields)}")
        rows.append(row)
    return rows


def keyed(rows: Sequence[Row], name: str) -> dict[str, Row]:
    """Rows by their first field; a key that appears twice is an error naming both lines."""
    out: dict[str, Row] = {}
    for row in rows:
        key = row.fields[0]
        if key in out:
            raise row.error(f"{name} {key!r} appears twice (first on line {out[key].lineno})")
        out[key] = row
    return out


def same_keys(
    primary: Mapping[str, Row],
    primary_path: Path,
    other: Mapping[str, Row],
    other_path: Path,
    name: str,
) -> None:
    """Check that two keyed index files list the same ids; the first mismatch is an error."""
    for key, row in other.items():
        if key not in primary:
            raise row.error(f"{name} {key!r} is not listed in {primary_path}")
    for key, row in primary.items():
        if key not in other:
            raise row.error(f"{name} {key!r} has no line in {other_path}")


def find_root(root: Path | None, *, folder: str, markers: Sequence[str], dataset: str) -> Path:
    """The dataset's top folder, given either that folder or the one that contains it.

    Args:
        root: ``data.root`` as given.
        folder: The dataset's top folder name in its official archive, e.g. ``"CUB_200_2011"``.
        markers: Files or folders directly inside the top folder; any one identifies it.
        dataset: Human-readable name for messages.
    """
    if root is None:
        raise DatasetError(
            f"{dataset} needs data.root: set it to the folder that contains {folder}/ "
            f"(or to {folder}/ itself); see docs/datasets.md."
        )
    root = Path(root).expanduser()
    for candidate in (root / folder, root):  # a parent may hold an images/ of its own
        if any((candidate / m).exists() for m in markers):
            return candidate
    raise DatasetError(
        f"no {dataset} dataset found at {root}: expected {root / folder / markers[0]} or "
        f"{root / markers[0]}. Set data.root to the folder that contains {folder}/ "
        f"(or to {folder}/ itself); see docs/datasets.md."
    )


def check_split(split: str, allowed: Sequence[str] = SPLITS) -> str:
    """``split`` must be one of ``allowed`` (``"train"`` or ``"test"``; datasets with an official
    validation split allow ``"val"`` too)."""
    if split not in allowed:
        names = " or ".join(repr(a) for a in allowed)
        raise ValueError(f"split must be {names}, got {split!r}.")
    return split


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def reject_unknown(dataset: str, options: Mapping[str, Any], valid: Collection[str]) -> None:
    """Unknown option keys are a ``ValueError`` that lists the valid ones."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        accepted = f"one of {sorted(valid)}" if valid else "none (it takes no options)"
        raise ValueError(
            f"options of dataset {dataset!r} must be {accepted}, got unknown {unknown}."
        )


def load_mat(path: Path, keys: Sequence[str], *, expected: str) -> dict[str, Any]:
    """Read variables from a MATLAB file (``scipy.io.loadmat(squeeze_me=True)``).

    Args:
        path: The ``.mat`` file.
        keys: Variables that must be present.
        expected: What the file holds, for the message when it is missing.
    """
    from scipy.io import loadmat  # only the .mat datasets need scipy

    if not path.is_file():
        raise DatasetError(
            f"annotation file {path} does not exist (expected {expected}); check that data.root "
            "points at the extracted dataset (see docs/datasets.md)."
        )
    try:
        mat = loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, ... for bad files
        raise DatasetError(f"cannot read MATLAB file {path}: {e}; {_FIX}.") from e
    for key in keys:
        if key not in mat:
            present = sorted(k for k in mat if not k.startswith("__"))
            raise DatasetError(
                f"{path} has no variable {key!r} (it has {present}); expected {expected}; {_FIX}."
            )
    return {key: mat[key] for key in keys}


def mat_ints(path: Path, key: str, value: Any, *, low: int, high: int | None = None) -> np.ndarray:
    """A ``.mat`` variable as a 1-D int64 array whose entries are integers in ``[low, high]``.

    Shape: (n,).
    """
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: variable {key!r} must be numeric; {_FIX}.") from None
    bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (arr < low)
    if high is not None:
        bad |= arr > high
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rule = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise DatasetError(
            f"{path}: entry {i + 1} of {key!r} is {arr[i]:g}, expected {rule}; {_FIX}."
        )
    return arr.astype(np.int64)


def mat_strings(path: Path, key: str, value: Any) -> list[str]:
    """A ``.mat`` cell array of strings as a list of ``str``."""
    arr = np.atleast_1d(np.asarray(value, dtype=object)).ravel()
    out = []
    for i, item in enumerate(arr.tolist()):
        if isinstance(item, np.ndarray) and item.size == 1:
            item = item.item()
        if not isinstance(item, str) or not item.strip():
            raise DatasetError(
                f"{path}: entry {i + 1} of {key!r} is {item!r}, expected a non-empty string; {_FIX}."
            )
        out.append(item.strip())
    return out
