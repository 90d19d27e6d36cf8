"""Names and paths from users' files: what may become a path component, what may be deleted or
written, and the one file mode of a run's files.

Every name that becomes a folder or file name (a bench method, dataset, suite, report or
pretraining name, a run's ``output_dir`` placeholder value) goes through :func:`plain_name`;
every path the bench deletes or writes goes through :func:`inside`.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Any

__all__ = [
    "PLAIN_NAME",
    "default_dir_mode",
    "default_file_mode",
    "fill_placeholders",
    "inside",
    "make_readable",
    "plain_name",
]

PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,127}")
"""A letter, digit or underscore, then letters, digits and ``_ . + = -``; at most 128 characters.
No separators, no ``..``, no leading dot or dash (hidden files, options), nothing a shell or a
file system treats specially."""


def plain_name(value: Any, what: str) -> str:
    """``value`` if it is a plain name (:data:`PLAIN_NAME`, not ``.``/``..``), else a one-line
    ``ValueError`` naming ``what``.

    Args:
        value: The name (from a YAML file or the command line).
        what: What it names, for the message (e.g. ``"method name"``).
    """
    if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} must be a plain name (letters, digits and _ . + = -, starting with a letter, "
            f"digit or _, no '..', at most 128 characters): it becomes a folder name; got {value!r}."
        )
    return value


def inside(path: Path, root: Path, what: str) -> Path:
    """``path`` if it resolves (symlinks followed) inside ``root`` (and is not ``root`` itself),
    else a one-line ``ValueError``: nothing outside a tool's own folder is deleted or written."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise ValueError(
            f"{what} {path} resolves to {resolved}, which is not inside {base}; refusing to write "
            "or delete it. Use plain names (no '..', no absolute paths, no symlinks out)."
        )
    return path


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SPEC = re.compile(r"[<>^]?0?[0-9]{0,2}(?:\.[0-9]{1,2})?[dfgs]?")
"""Format specs a placeholder may carry: alignment, zero padding, a width and precision below
100, a type (``{seed:03d}``, ``{carrot.lam:.2f}``); nothing nested, nothing huge."""


def fill_placeholders(template: str, values: dict[str, Any], *, key: str = "output_dir") -> str:
    """``template`` with each ``{a.b}`` replaced by ``values["a.b"]`` (a flattened config).

    Placeholders may only name keys: no attribute access beyond the dotted key, no indexing, no
    conversion (``!r``), and only a short plain format spec (``{seed:03d}``); ``{{`` and ``}}`` are
    literal braces. A value holding a path separator, a NUL or ``..`` is refused too, since it becomes part of a path.

    Args:
        template: e.g. ``"runs/{data.name}-{method}-s{seed}"``.
        values: Dotted key → value.
        key: The setting's name, for the messages.
    """
    out = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"{key} {template!r} is not a valid template ({e}).") from e
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if conversion is not None or not _SPEC.fullmatch(spec or "") or not _FIELD.fullmatch(field):
            raise ValueError(
                f"{key} placeholders must name a config key, like {{data.name}} or {{seed:03d}} "
                f"(no indexing, attributes, conversions or nested or long format specs), got "
                f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}."
            )
        if field not in values or isinstance(values[field], dict):
            raise ValueError(
                f"{key} placeholder {{{field}}} is not a config key; use keys such as {{method}}, "
                "{seed}, {data.name}, {model.backbone}."
            )
        value = values[field]
        if value is None or not isinstance(value, (str, int, float)):
            shown = "null (unset)" if value is None else f"a {type(value).__name__} ({value!r})"
            raise ValueError(
                f"{key} placeholder {{{field}}} is {shown}; only a single value (a name, a number, "
                "true/false) can be part of a folder name."
            )
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if spec:
            try:
                text = format(value, spec)
            except (ValueError, TypeError) as e:
                raise ValueError(
                    f"{key} placeholder {{{field}:{spec}}} does not fit the value {value!r} ({e})."
                ) from e
        if (
            "/" in text
            or "\\" in text
            or ".." in text
            or not text
            or any(c.isspace() or not c.isprintable() for c in text)
        ):
            raise ValueError(
                f"{key} placeholder {{{field}}} has the value {text!r}, which cannot be part of a "
                "folder name (empty, or holds '/', '\\', '..', a space or a control character); "
                "write the folder out, or pad with zeros ({seed:03d})."
            )
        out.append(text)
    return "".join(out)


_UMASK: list[int] = []


def _umask() -> int:
    if not _UMASK:
        mask = None
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("Umask:"):
                    mask = int(line.split()[1], 8)
        except OSError:
            pass
        if mask is None:
            mask = os.umask(0o022)  # read it back (not thread-safe; once per process)
            os.umask(mask)
        _UMASK.append(mask)
    return _UMASK[0]


def default_file_mode() -> int:
    """0o666 less the process umask: the mode ``open()`` gives a new file (0644 under the usual
    umask 022), for files written through a temporary (``mkstemp`` makes them 0600)."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """0o777 less the umask: the mode ``mkdir`` gives (``mkdtemp`` makes folders 0700)."""
    return 0o777 & ~_umask()


def make_readable(fd: int) -> None:
    """Give a file opened by ``mkstemp`` the mode of every other file of a run."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, default_file_mode())
