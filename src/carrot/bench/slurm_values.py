"""Every value that reaches a generated SLURM job script is one line of plain text.

submitit writes ``#SBATCH --KEY=VALUE`` lines and an ``srun`` line holding the log folder; a
newline (or any other control character) in one of them would start a line of its own in the
script, i.e. run a command or add an option the user never wrote. Refused before anything is
submitted or created.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class SlurmValues(Protocol):
    """The values of :class:`carrot.bench.slurm.SlurmOptions` that reach the job script (a
    protocol: that module imports this one)."""

    @property
    def partition(self) -> str | None: ...

    @property
    def time(self) -> str | None: ...

    @property
    def account(self) -> str | None: ...

    @property
    def sbatch(self) -> Sequence[str]: ...

__all__ = ["check_script_text", "check_slurm_options", "sbatch_key"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def check_script_text(value: str, name: str) -> str:
    """``value`` if it holds no control character (C0, DEL: newline, CR, tab, NUL...)."""
    bad = _CONTROL.search(value)
    if bad is not None:
        raise ValueError(
            f"{name} must be one line of printable text (it goes into the SLURM job script), "
            f"got {value!r} with control character {bad.group()!r}."
        )
    return value


def sbatch_key(option: str) -> tuple[str, str | bool]:
    """``KEY=VALUE`` (or ``KEY``) of ``--sbatch-option`` as submitit's (key, value)."""
    check_script_text(option, "--sbatch-option")
    key, sep, value = option.lstrip("-").partition("=")
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"--sbatch-option must be KEY=VALUE or KEY with KEY an sbatch option name (letters, "
            f"digits, - and _), got {option!r}."
        )
    return key.replace("-", "_"), value if sep else True


def check_slurm_options(opts: SlurmValues, out: Path) -> None:
    """Refuses, in one line naming the option, a control character in any value of ``opts``
    or in the results folder ``out`` (the job logs' folder is inside it)."""
    for name, value in (
        ("--slurm-partition", opts.partition),
        ("--slurm-time", opts.time),
        ("--slurm-account", opts.account),
        ("--out", str(out)),
        ("--out (absolute)", str(Path(out).absolute())),
    ):
        if value is not None:
            check_script_text(value, name)
    for option in opts.sbatch:
        sbatch_key(option)
