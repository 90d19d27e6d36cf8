"""ISDA's N·D² covariances are checked against the available memory before they are allocated
(issue 32: 600 classes × 4096-d tried 40 GB)."""

from __future__ import annotations

from pathlib import Path

import pytest

import carrot.baselines
from carrot.baselines import ISDALoss, available_memory
from cli_run import carrot_cli, one_line_error


def test_the_state_is_checked_before_it_is_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carrot.baselines, "available_memory", lambda: 10**9)  # 1 GB free
    with pytest.raises(
        ValueError, match=r"600 classes × 4096² × 4 bytes = 40.3 GB, more than the 1.0 GB"
    ):
        ISDALoss(600, 4096)
    with pytest.raises(ValueError, match=r"200 classes × 2048² × 4 bytes = 3.4 GB"):
        ISDALoss(200, 2048)
    assert ISDALoss(200, 512).covariance.shape == (200, 512, 512)  # 0.2 GB fits


def test_available_memory_is_a_plausible_number() -> None:
    have = available_memory()
    assert have is None or 10**6 < have < 10**15


@pytest.mark.slow
def test_the_cli_refuses_in_one_line(tmp_path: Path) -> None:
    done = carrot_cli(
        "train", "method=isda", "model.embedding_dim=65536", "data.name=synthetic",
        "data.options.num_superclasses=3", "data.options.classes_per_superclass=3",
        "data.options.image_size=16", "data.image_size=16", "train.device=cpu",
        f"output_dir={tmp_path / 'run'}",
    )  # fmt: skip
    one_line_error(done, "ISDA keeps one D×D covariance per class", "9 classes × 65536²")
    assert not (tmp_path / "run").exists()
