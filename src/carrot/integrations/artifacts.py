"""The files of a run folder that the trackers log as artifacts."""

from __future__ import annotations

from pathlib import Path

__all__ = ["artifact_files"]


def artifact_files(run_dir: Path) -> list[Path]:
    """What a run logs as artifacts: its config, summary, metrics and plots, where they exist."""
    names = ("config.yaml", "summary.json", "metrics.jsonl", "environment.json")
    files = [run_dir / n for n in names if (run_dir / n).is_file()]
    return files + sorted((run_dir / "plots").glob("*.png"))
