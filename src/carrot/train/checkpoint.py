"""Checkpoints that cannot run code: tensors and plain containers, read with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts of them: the config as a
dict, the model / optimizer / scaler / EMA / memory state dicts, the training state, the RNG
states (as tensors and ints), the class names. :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``: a file that needs pickle is refused before any of it runs.
Checkpoints of carrot 0.1 (which pickled numpy arrays) can be converted with
``carrot convert OLD NEW --trust``.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from carrot.paths import make_readable

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "TrainState",
    "atomic_save",
    "check_classes",
    "check_weights",
    "convert_checkpoint",
    "load_checkpoint",
    "method_state",
    "plain_rng_state",
    "remove_stale_temporaries",
    "restore_rng_state",
    "training_checkpoint",
]

CHECKPOINT_FORMAT = 2
"""1: carrot 0.1 (pickled numpy RNG state); 2: tensors and plain containers only."""


@dataclass
class TrainState:
    """Where a run is: saved in every checkpoint (``state``, ``history``)."""

    epoch: int = 0
    """Epochs completed (trained; see eval_pending)."""
    step: int = 0
    """Optimizer steps completed, over the whole run."""
    batch: int = 0
    """Optimizer steps completed in the current epoch."""
    best_top1: float = -math.inf
    """The best selection score so far: validation top-1 with a validation split, else test
    top-1 (of the EMA model where there is one; :func:`carrot.train.evaluate.selection_score`)."""
    best_epoch: int | None = None
    eval_pending: bool = False
    """The last completed epoch was saved before its evaluation: evaluate it before going on."""
    history: list[dict[str, Any]] = field(default_factory=list)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, unsafe or does not fit: the message says which file
    and what to do."""


def _plain_rng(python: Any, numpy: Any) -> dict[str, Any]:
    """Python's and numpy's RNG states (as their ``getstate`` functions give them) as plain
    values and tensors."""
    version, mt, gauss = python
    name, keys, pos, has_gauss, cached = numpy
    return {
        "python": [int(version), [int(v) for v in mt], gauss],
        "numpy": {
            "name": str(name),
            "keys": torch.as_tensor(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def plain_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain Python values."""
    state = _plain_rng(random.getstate(), np.random.get_state())  # noqa: NPY002
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this rank's device only
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt), gauss))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def check_weights(state: Any, what: str) -> None:
    """Raises :class:`CheckpointError` unless ``state`` is a mapping of tensors whose floating
    values are all finite: a model whose weights hold NaN or inf predicts nothing meaningful,
    so it is refused rather than evaluated, predicted with or exported."""
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"{what} must be a mapping of names to tensors, got {type(state).__name__}; the file "
            "was not written by carrot."
        )
    bad = [
        k
        for k, v in state.items()
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise CheckpointError(
            f"{what} hold NaN or inf in {len(bad)} tensor(s) (first: {', '.join(bad[:3])}); the "
            "run diverged before this save. Use an earlier checkpoint (e.g. checkpoints/best.pt) "
            "or retrain with a lower train.lr."
        )


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed save left behind; returns what was removed."""
    removed = []
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file, fsync and a rename: a crash never leaves half a
    checkpoint, and the previous file stays intact if the disk is full."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        make_readable(fd)  # one mode for all of a run's files (mkstemp's is 0600)
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, KeyboardInterrupt):
            full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "the disk is full" if full else f"{type(e).__name__}: {e}"
            raise CheckpointError(
                f"could not write checkpoint {path} ({why}); the previous checkpoint is intact. "
                "Free space (or fix the folder) and continue with `carrot train --resume`."
            ) from e
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A carrot checkpoint, read with ``torch.load(weights_only=True)``; one clear error for a
    missing, empty, truncated, foreign or pickled file. Nothing in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a save was interrupted.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # no Python object refused: corrupt bytes
            raise CheckpointError(
                f"checkpoint {path} is not readable ({str(e).splitlines()[0]}); it is corrupt or "
                "not a checkpoint. Use another checkpoint of the run."
            ) from e
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects, which carrot does not load (they "
            "could run code). If it was written by carrot 0.1 and you trust it, convert it: "
            f"carrot convert {path} NEW.pt --trust"
        ) from e
    except Exception as e:  # torch raises RuntimeError, EOFError, zipfile errors, ...
        raise CheckpointError(
            f"checkpoint {path} is not readable ({type(e).__name__}: {str(e).splitlines()[0]}); it "
            "is truncated, corrupt or not a checkpoint. Use another checkpoint of the run."
        ) from e
    _check_format(ckpt, path)
    return ckpt


def _check_is_checkpoint(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise CheckpointError(
            f"{path} is not a carrot checkpoint (no config/model entries); for plain weights use "
            "model.pretrained_path."
        )


def _check_format(ckpt: Any, path: Path) -> None:
    _check_is_checkpoint(ckpt, path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt.get('format')}, this carrot reads format "
            f"{CHECKPOINT_FORMAT}; convert it with: carrot convert {path} NEW.pt --trust"
        )


def check_classes(saved: list[str] | None, current: list[str], path: Path, data: str) -> None:
    """The checkpoint's class names must be the dataset's, in the same order: label i means the
    same class on both sides, or every prediction is wrong without any error."""
    if saved is None:
        raise CheckpointError(f"{path} records no class names; it cannot be matched to {data}.")
    if list(saved) == list(current):
        return
    diffs = [
        f"label {i}: checkpoint {a!r} vs data {b!r}"
        for i, (a, b) in enumerate(zip(saved, current, strict=False))
        if a != b
    ]
    if len(saved) != len(current):
        diffs.insert(0, f"{len(saved)} classes in the checkpoint vs {len(current)} in the data")
    raise CheckpointError(
        f"the classes of {path} differ from those of {data}: {'; '.join(diffs[:4])}"
        f"{'; ...' if len(diffs) > 4 else ''}. Point data.root at the dataset the model was "
        "trained on (class folders renamed or added change the labels)."
    )


def _plain(value: Any) -> Any:
    """numpy values and containers of them as plain Python values / tensors."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _convert_rng(state: dict[str, Any]) -> dict[str, Any]:
    out = _plain_rng(state["python"], state["numpy"])
    out["torch"] = state["torch"]
    if "cuda" in state:
        out["cuda"] = state["cuda"]
    return out


def _convert_config(config: dict[str, Any]) -> dict[str, Any]:
    """carrot 0.1 config keys in today's spelling (data.augment, data.resize), with the
    preprocessing 0.1 used pinned, so that the model is evaluated and resumed as it was trained:
    the dataset's or ImageNet's mean/std, bilinear resizing, the short side to ``resize``
    (default image_size / 0.875) before a crop."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from carrot.data import DATASETS

    data = dict(config.get("data", {}))
    if "augment" in data:
        data["train_transform"] = data.pop("augment")
    size = int(data.get("image_size", 32))
    resize = data.pop("resize", None) or round(size / 0.875)
    kind = DATASETS.get(str(data.get("name", "")))
    mean = getattr(kind, "mean", None) or IMAGENET_DEFAULT_MEAN
    std = getattr(kind, "std", None) or IMAGENET_DEFAULT_STD
    data.setdefault("mean", [float(v) for v in mean])
    data.setdefault("std", [float(v) for v in std])
    data.setdefault("interpolation", "bilinear")
    data.setdefault("crop_pct", size / resize)
    data.setdefault("resize_mode", "short_side")
    return {**config, "data": data}


def convert_checkpoint(old: Path, new: Path, *, trust: bool) -> dict[str, Any]:
    """Rewrite a carrot 0.1 checkpoint (pickled) in today's safe format.

    Unpickling can run code that the file carries, so it happens only with ``trust=True``; the
    result is checked to load with ``weights_only=True`` before it is written.
    """
    old, new = Path(old), Path(new)
    if not trust:
        raise CheckpointError(
            f"converting {old} unpickles it, which runs any code the file carries; only do this "
            "for a file you trust, by adding --trust."
        )
    if not old.is_file():
        raise CheckpointError(f"checkpoint {old} does not exist.")
    if new.exists():
        raise CheckpointError(f"{new} already exists; choose another output file.")
    ckpt = torch.load(old, map_location="cpu", weights_only=False)
    _check_is_checkpoint(ckpt, old)
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        raise CheckpointError(f"{old} is already in format {CHECKPOINT_FORMAT}; nothing to do.")
    out = _plain(dict(ckpt))
    out["format"] = CHECKPOINT_FORMAT
    out["config"] = _convert_config(out["config"])
    out["rng"] = [_convert_rng(r) for r in ckpt.get("rng", [])]
    state = out.setdefault("state", {})
    state.setdefault("eval_pending", False)
    atomic_save(out, new)
    load_checkpoint(new)  # proves it loads without pickle
    return out


def method_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The method's state dict (its parameters and buffers) from a checkpoint; checkpoints of
    before the methods registry kept only CARROT's class memory, under ``memory``."""
    if "method" in ckpt:
        return dict(ckpt["method"])
    memory = ckpt.get("memory")
    return {f"memory.{k}": v for k, v in memory.items()} if memory else {}


def training_checkpoint(state: TrainState, world_size: int, distributed: bool) -> dict[str, Any]:
    """The run-wide part of a trainer checkpoint: format, world size, training state and
    history, and every rank's RNG states (a collective under DDP: every rank calls it)."""
    rngs: list[Any] = [plain_rng_state()]
    if distributed:
        rngs = [None] * world_size
        dist.all_gather_object(rngs, plain_rng_state())
    return {
        "format": CHECKPOINT_FORMAT,
        "world_size": world_size,
        "state": {k: v for k, v in asdict(state).items() if k != "history"},
        "history": state.history,
        "rng": rngs,
    }
