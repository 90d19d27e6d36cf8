"""Checking that every image of a dataset decodes, once, before training starts.

A corrupt or empty file found in the middle of an epoch costs that epoch; found at the end-of-epoch
evaluation it costs it again on every resume. :func:`check_images` opens each file and decodes it
at reduced size (JPEG draft mode: a fraction of a full decode), on a few threads, and reports
every bad file at once. Results are cached by path, size and modification time, so a dataset is
checked once per machine, not once per run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from carrot.data.base import DatasetError

__all__ = ["cache_dir", "check_images", "decode_error"]


def cache_dir() -> Path:
    """``$CARROT_CACHE``, else ``$XDG_CACHE_HOME/carrot``, else ``~/.cache/carrot``."""
    if "CARROT_CACHE" in os.environ:
        return Path(os.environ["CARROT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / __name__.partition(".")[0]  # the package's name: carrot


def decode_error(path: Path) -> str | None:
    """Why ``path`` is not a readable image, or None if it decodes."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale
            img.load()
    except FileNotFoundError:
        return "file does not exist"
    except Exception as e:  # PIL raises many types for corrupt files
        return f"{type(e).__name__}: {e}"
    return None


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def check_images(
    paths: Sequence[Path],
    *,
    what: str,
    workers: int = 8,
    use_cache: bool = True,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decode every file in ``paths``; raise one :class:`DatasetError` listing all that fail.

    Args:
        paths: Image files.
        what: The dataset and split, for the message.
        workers: Threads (PIL releases the GIL while decoding).
        use_cache: Remember files that decoded (by path, size and mtime) in :func:`cache_dir`.
        progress: Called with the number of files checked, as they are.

    Returns:
        How many files were decoded (not found in the cache).
    """
    paths = [Path(p) for p in paths]
    cache_file = None
    known: set[str] = set()
    if use_cache and paths:
        digest = hashlib.sha1(str(paths[0].resolve().parent.parent).encode()).hexdigest()[:16]
        cache_file = cache_dir() / "image-check" / f"{digest}.json"
        try:
            known = set(json.loads(cache_file.read_text()))
        except (OSError, ValueError):
            known = set()
    todo: list[tuple[Path, str | None]] = []
    for p in paths:
        try:
            key = _key(p)
        except OSError:
            key = None  # missing: decode_error says so
        if key is None or key not in known:
            todo.append((p, key))
    bad: list[str] = []
    good: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (p, key), err in zip(todo, pool.map(lambda t: decode_error(t[0]), todo), strict=True):
            if err is None:
                if key is not None:
                    good.append(key)
            else:
                bad.append(f"{p} ({err})")
            if progress is not None:
                progress(1)
    if progress is not None and len(paths) > len(todo):
        progress(len(paths) - len(todo))
    if cache_file is not None and good:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(sorted(known | set(good))))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only home: check again next time
    if bad:
        shown = "\n  ".join(bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DatasetError(
            f"{len(bad)} of {len(paths)} images of {what} cannot be read; re-download or remove "
            f"them (a removed file must also leave the dataset's index files):\n  {shown}{more}"
        )
    return len(todo)
