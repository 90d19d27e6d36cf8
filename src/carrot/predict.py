"""``carrot predict``: class predictions for image files, as a CSV (timm's ``inference.py`` style).

One row per image, in sorted path order: ``path``, ``label`` (top-1 class name), ``prob`` (its
softmax probability), ``top2_label``, ``top2_prob``, ... up to top-k, and ``error``: an image that
cannot be read gets a row with the error filled in instead of stopping the run.
"""

from __future__ import annotations

import csv
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from carrot.paths import make_readable
from carrot.tables import csv_row

__all__ = ["IMAGE_EXTENSIONS", "find_images", "predict"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _walk(folder: Path) -> Iterator[Path]:
    """Every entry under ``folder`` outside hidden files and folders, following symlinked
    folders as training's ImageFolder does (each real folder once: a link loop ends)."""
    seen: set[str] = set()
    for here, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith("."):
                yield Path(here) / name


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively (symlinks
    followed, hidden files and folders skipped) for image extensions; sorted, without
    duplicates. A FIFO, socket or device is listed too: :func:`predict` gives it a row that
    says it was skipped (opening a FIFO would wait forever)."""
    found: set[Path] = set()
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found.update(f for f in _walk(p) if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.exists():
            found.add(p)
        else:
            raise FileNotFoundError(f"{p} does not exist (PATH must be image files or folders).")
    return sorted(found, key=str)


def _not_regular(path: Path) -> str:
    """Why ``path`` is not read ("" for a regular file, symlinks followed)."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    if stat.S_ISREG(mode):
        return ""
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"skipped: not a regular file ({kind})"


def _text(path: Path) -> str:
    """``path`` as valid UTF-8 text: bytes of a name that are not UTF-8 (a file from another
    system) become ``\\xNN`` escapes instead of failing the CSV."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class _Files(Dataset[tuple[Tensor, int, str]]):
    """Images through the evaluation transform; an unreadable file yields its error message."""

    def __init__(
        self, files: Sequence[Path], transform: Any, *, channels: int, photo: bool
    ) -> None:
        self.files, self.transform = files, transform
        self.mode = "L" if channels == 1 else "RGB"
        self.photo = photo
        self.shape = (channels, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int, str]:
        from PIL import Image
        from torchvision.transforms.v2.functional import pil_to_tensor

        from carrot.data.base import convert_image

        odd = _not_regular(self.files[i])
        if odd:
            return torch.zeros(0), i, odd
        try:
            with Image.open(self.files[i]) as img:
                img = convert_image(img, self.mode)  # as training reads it
            x = self.transform(img if self.photo else pil_to_tensor(img))
            return x, i, ""
        except Exception as e:  # PIL and the transforms raise many types for bad files
            return torch.zeros(0), i, f"{type(e).__name__}: {e}".replace("\n", " ")


def _collate(items: list[tuple[Tensor, int, str]]) -> tuple[Tensor | None, list[int], list[str]]:
    good = [x for x, _, err in items if not err]
    return (torch.stack(good) if good else None), [i for _, i, _ in items], [e for *_, e in items]


def predict(
    checkpoint: Path,
    paths: Iterable[str | Path],
    *,
    out: Path,
    top_k: int = 5,
    batch_size: int = 32,
    device: str = "cpu",
    ema: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    tta: str = "none",
) -> dict[str, Any]:
    """Predict every image of ``paths`` with the checkpoint's model, its own evaluation transform
    and class names; write the CSV to ``out``. Returns counts and the output path. ``tta``:
    test-time augmentation, ``none`` or ``flip`` (see :mod:`carrot.train.tta`)."""
    from carrot.counts import check_count
    from carrot.train.data import build_transforms
    from carrot.train.progress import Progress
    from carrot.train.runtime import check_device
    from carrot.train.trained import load_trained
    from carrot.train.tta import with_tta

    check_count(top_k, "--top-k", hi=100_000)  # more than the classes is the classes
    check_count(batch_size, "--batch-size", hi=65_536)
    check_count(num_workers, "--workers", lo=0, hi=1024)
    out = Path(out)
    if out.is_dir():
        raise ValueError(
            f"--out {out} is a folder; give the CSV file to write, e.g. {out / 'preds.csv'}."
        )
    files = find_images(paths)
    if not files:
        raise FileNotFoundError("no image files found in the given paths.")
    dev = check_device(device, "--device")
    trained = load_trained(Path(checkpoint), ema=ema, device=dev)
    cfg, classes = trained.cfg, trained.classes
    traits = trained.dataset_traits
    model = with_tta(trained.model, tta, traits=traits, dataset=cfg.data.name)
    transform = build_transforms(cfg, traits, train=False)
    loader = DataLoader(
        _Files(files, transform, channels=trained.in_chans, photo=traits.photo),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    k = min(top_k, len(classes))
    rows: list[dict[str, Any]] = []
    bar = Progress(total=len(files), desc="predicting", enabled=progress)
    try:
        with torch.no_grad():
            for x, idx, errors in loader:
                probs = None
                if x is not None:
                    probs = torch.softmax(model(x.to(dev)).logits.float(), dim=1)
                    top_p, top_i = probs.topk(k, dim=1)
                j = 0
                for i, err in zip(idx, errors, strict=True):
                    row: dict[str, Any] = {"path": _text(files[i])}
                    if err:
                        row["error"] = err.encode("utf-8", "backslashreplace").decode("utf-8")
                    else:
                        for rank in range(k):
                            name = "" if rank == 0 else f"top{rank + 1}_"
                            row[f"{name}label"] = classes[int(top_i[j, rank])]
                            row[f"{name}prob"] = f"{float(top_p[j, rank]):.6f}"
                        row["error"] = ""
                        j += 1
                    rows.append(row)
                bar.update(len(idx))
    finally:
        bar.close()
    columns = ["path", "label", "prob"]
    for rank in range(2, k + 1):
        columns += [f"top{rank}_label", f"top{rank}_prob"]
    columns.append("error")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Through a temporary and a rename: an interrupted write never leaves half a CSV.
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        make_readable(fd)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(csv_row(r) for r in rows)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    failed = sum(bool(r["error"]) for r in rows)
    return {"out": str(out), "images": len(rows), "failed": failed}
