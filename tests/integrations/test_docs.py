"""Every Python block of docs/integrations.md runs as it stands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def _blocks() -> list[tuple[str, str]]:
    """``(section heading, code)`` of every fenced ```python block, in order."""
    text = DOC.read_text(encoding="utf-8")
    blocks, heading = [], ""
    for match in re.finditer(r"^## ([^\n]+)$|^```python\n(.*?)^```$", text, re.M | re.S):
        if match.group(1):
            heading = match.group(1).split(":")[0].strip()
        else:
            blocks.append((heading, match.group(2)))
    return blocks


BLOCKS = _blocks()


def test_the_page_has_a_snippet_per_integration() -> None:
    assert [h for h, _ in BLOCKS] == [
        "pytorch-metric-learning",
        "PyTorch Lightning",
        "A plain timm-style loop",
    ]


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[h for h, _ in BLOCKS])
def test_snippet_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the Lightning snippet writes its logs here
    exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_snippet__"})
