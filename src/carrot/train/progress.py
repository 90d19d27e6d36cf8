"""Progress reporting: a tqdm bar on a terminal, plain log lines everywhere else.

tqdm redraws its bar with carriage returns; redirected to a file or a CI log every redraw
becomes a line of its own. Off a terminal, :class:`Progress` prints one line at every tenth of
the work (or every ``every`` steps) instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """``update(n)``, ``set_postfix(dict)``, ``close()``; silent when ``enabled`` is false.

    Args:
        total: Units of work (steps, images).
        desc: What is being done, e.g. ``"epoch 3/10"``.
        enabled: Show anything at all.
        initial: Work already done (a resumed epoch).
        every: Off a terminal, log every this many units (default: a tenth of ``total``).
        stream: Where to write (default: stderr).
    """

    def __init__(
        self,
        *,
        total: int,
        desc: str,
        enabled: bool = True,
        initial: int = 0,
        every: int | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.done = initial
        self.stream = stream if stream is not None else sys.stderr
        self.postfix: dict[str, str] = {}
        self._bar: Any = None
        self._start = time.perf_counter()
        self._every = every if every is not None else max(1, total // 10)
        self._next_line = initial + self._every
        if not enabled:
            return
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                leave=False,
                dynamic_ncols=True,
                file=self.stream,
            )

    def set_postfix(self, values: dict[str, Any]) -> None:
        self.postfix = {
            k: f"{v:.3g}" if isinstance(v, float) else str(v) for k, v in values.items()
        }
        if self._bar is not None:
            self._bar.set_postfix(self.postfix)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and (self.done >= self._next_line or self.done >= self.total):
            self._next_line = self.done + self._every
            self._line()

    def _line(self) -> None:
        seconds = time.perf_counter() - self._start
        extra = " ".join(f"{k} {v}" for k, v in self.postfix.items())
        print(
            f"{self.desc}: {self.done}/{self.total} ({seconds:.0f}s){' ' + extra if extra else ''}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
