"""Checks that keep a run honest about its data: the run folder is not inside the dataset, and a
resumed run still reads the files it started with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from carrot.methods import get_method
from carrot.train.config import Config, ConfigError

__all__ = [
    "FINGERPRINT_FILE",
    "check_fingerprint",
    "check_outside_data",
    "data_fingerprint",
]

FINGERPRINT_FILE = "data.json"


def check_outside_data(run_dir: Path, cfg: Config) -> None:
    """Refuse a run folder inside ``data.root``: its plots and checkpoints would become part of
    the dataset (an ImageFolder class, or files a later run reads as images)."""
    if cfg.data.root is None:
        return
    root = Path(cfg.data.root).expanduser().resolve()
    run = Path(run_dir).expanduser().resolve()
    if run == root or run.is_relative_to(root):
        raise ConfigError(
            f"output_dir {run_dir} is inside data.root {cfg.data.root}; the run's files would "
            "become part of the dataset. Write runs elsewhere (e.g. output_dir=runs/...)."
        )


def _split_print(split: Any, root: Path | None) -> dict[str, Any]:
    """A split's identity: its class names, and its files with their sizes (relative to
    data.root, which may move), or for built-in data its labels."""
    out: dict[str, Any] = {"classes": list(split.classes), "count": len(split)}
    paths = getattr(split, "paths", None)
    if paths:
        files: dict[str, int] = {}
        for p in paths:
            p = Path(p)
            try:
                key = str(p.resolve().relative_to(root)) if root is not None else str(p)
            except ValueError:
                key = str(p)
            try:
                files[key] = p.stat().st_size
            except OSError:
                files[key] = -1
        out["files"] = files
    else:
        labels = np.ascontiguousarray(np.asarray(split.labels, dtype=np.int64))
        out["labels_sha256"] = hashlib.sha256(labels.tobytes()).hexdigest()
    return out


def data_fingerprint(splits: Any, cfg: Config) -> dict[str, Any]:
    """The fingerprint of a run's splits (a stat per file, no image decoded)."""
    root = Path(cfg.data.root).expanduser().resolve() if cfg.data.root else None
    out = {
        "dataset": cfg.data.name,
        "train": _split_print(splits.train, root),
        "test": _split_print(splits.test, root),
    }
    if getattr(splits, "val", None) is not None:
        out["val"] = _split_print(splits.val, root)
    return out


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    said = []
    if old.get("dataset") != new.get("dataset"):
        said.append(f"dataset {old.get('dataset')} → {new.get('dataset')}")
    for split in ("train", "val", "test"):
        a, b = old.get(split, {}), new.get(split, {})
        if a.get("classes") != b.get("classes"):
            said.append(f"{split}: the class list changed")
        fa, fb = a.get("files"), b.get("files")
        if isinstance(fa, dict) and isinstance(fb, dict):
            added = sorted(set(fb) - set(fa))
            removed = sorted(set(fa) - set(fb))
            changed = sorted(k for k in set(fa) & set(fb) if fa[k] != fb[k])
            for what, keys in (("added", added), ("removed", removed), ("changed", changed)):
                if keys:
                    said.append(f"{split}: {len(keys)} file(s) {what} (first: {keys[0]})")
        elif a.get("labels_sha256") != b.get("labels_sha256") or a.get("count") != b.get("count"):
            said.append(f"{split}: the images changed ({a.get('count')} → {b.get('count')})")
    return said


def check_fingerprint(run_dir: Path, current: dict[str, Any], *, write: bool) -> None:
    """Record ``current`` in ``run_dir/data.json`` when the run starts (``write``), or, when it
    resumes, refuse data that differs from the recorded one, naming what changed. A run from
    before fingerprints were recorded is resumed unchecked (and recorded now)."""
    from carrot.train.runtime import atomic_write_text

    path = Path(run_dir) / FINGERPRINT_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = None
        if isinstance(saved, dict):
            changed = _differences(saved, current)
            if changed:
                raise ConfigError(
                    f"the dataset changed since {run_dir} started: {'; '.join(changed)}. A "
                    "resumed run must read the data it started with: restore it, or start a new "
                    "run (another output_dir)."
                )
            return
    if write:
        atomic_write_text(path, json.dumps(current) + "\n")


def check_two_classes(cfg: Config, num_classes: int) -> None:
    """A method with batch statistics (``min_classes`` >= 2) needs a dataset of at least two
    classes."""
    if get_method(cfg.method).min_classes >= 2 and num_classes < 2:
        raise ConfigError(
            f"method={cfg.method} needs at least two classes in every batch, but "
            f"{cfg.data.name} has {num_classes} class(es); use method=ce or add classes."
        )
