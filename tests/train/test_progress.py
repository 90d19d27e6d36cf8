"""carrot.train.progress: plain lines off a terminal, the live bar on one."""

from __future__ import annotations

import io

from carrot.train.progress import Progress

# --- progress ------------------------------------------------------------------------------------


def test_progress_off_a_terminal_logs_lines_not_carriage_returns() -> None:
    stream = io.StringIO()
    bar = Progress(total=100, desc="epoch 1/3", stream=stream, every=25)
    for _ in range(100):
        bar.update(1)
    bar.set_postfix({"loss": 0.5})
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split()[2] for line in lines] == ["25/100", "50/100", "75/100", "100/100"]
    quiet = io.StringIO()
    Progress(total=10, desc="x", stream=quiet, enabled=False).update(10)
    assert quiet.getvalue() == ""


def test_progress_keeps_tqdms_live_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = Progress(total=50, desc="epoch 1/3", stream=stream, every=25)
    for _ in range(50):
        bar.update(1)
    bar.close()
    assert "\r" in stream.getvalue() and "epoch 1/3: 25/50" not in stream.getvalue()
