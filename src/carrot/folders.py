"""Output folders written whole or not at all: export folders, evaluation and bench reports.

A command builds its folder in a temporary sibling (:func:`staged_folder`) and, once every file is
written, puts it in place with renames (:func:`replace_folder`): an error, a Ctrl-C or a second
command writing the same folder never leaves a mix of old and new files.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from carrot.paths import default_dir_mode, default_file_mode

__all__ = ["check_target", "replace_folder", "staged_folder"]

_SWAP_TRIES = 100  # another command swapping the same folder at the same moment: try again


def check_target(
    out: Path, *, force: bool, flag: str = "--out", error: type[ValueError] = ValueError
) -> None:
    """Refuse, in one line, a target folder that is a symbolic link, a file, or (without
    ``force``) a folder that holds files.

    A link is refused rather than followed: replacing the folder replaces the link itself, and
    writing through it writes somewhere the user did not name.

    Args:
        out: The folder to write.
        force: Whether a non-empty folder may be replaced.
        flag: The option that named it, for the message.
        error: The exception type to raise (a ``ValueError``).
    """
    if out.is_symlink():
        raise error(
            f"{flag} {out} is a symbolic link (to {os.readlink(out)}); give the folder itself, "
            "not a link to it."
        )
    if out.exists() and not out.is_dir():
        raise error(f"{flag} {out} is a file; this writes a folder. Choose another {flag}.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise error(f"{flag} {out} exists and is not empty; choose another {flag} or add --force.")


def _readable(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes ``mkdir`` and ``open`` give: ``mkdtemp``
    makes folders 0700 and some writers (safetensors) make files 0600."""
    os.chmod(folder, default_dir_mode())
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), default_dir_mode())
        for name in files:
            os.chmod(os.path.join(root, name), default_file_mode())


def replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` at ``out`` as a whole: a rename when ``out`` is absent or
    empty, else ``out`` renamed aside, ``new`` renamed in and the old folder removed. ``new`` must
    be on the same file system (a sibling of ``out``)."""
    for _ in range(_SWAP_TRIES):
        try:
            os.rename(new, out)  # replaces an empty folder
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        try:
            os.rename(out, old)
        except FileNotFoundError:  # another writer moved it aside first
            pass
        try:
            os.rename(new, out)
            return
        except OSError as e:  # another writer put its folder in place between the renames
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    raise RuntimeError(f"{out} kept changing while being replaced; run the command again.")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; when the block ends without an error it
    replaces ``out`` whole (:func:`replace_folder`), otherwise it is removed and ``out`` is left
    as it was. Its files get the usual modes (0644 under umask 022)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        _readable(tmp)
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
