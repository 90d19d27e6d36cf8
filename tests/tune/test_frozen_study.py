"""The tuned study's frozen configurations (configs/tuned, docs/results.md) stay usable as they
are: every best.yaml loads as a training config, and each folder is a --tuned suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrot.train.config import load_config
from carrot.tune.tuned import tuned_suite

TUNED = Path(__file__).resolve().parents[2] / "configs" / "tuned"
FOLDERS = sorted(p for p in TUNED.iterdir() if (p / "tune.json").is_file())


def test_the_study_froze_its_three_tunings() -> None:
    assert [p.name for p in FOLDERS] == ["guide", "methods", "plus"]


@pytest.mark.parametrize("best", sorted(TUNED.glob("*/*/best.yaml")), ids=lambda p: p.parent.name)
def test_every_tuned_config_loads_on_the_full_training_set(best: Path) -> None:
    cfg = load_config(best)
    assert cfg.data.val_split == "none" and cfg.data.name == "synthetic"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_every_folder_is_a_tuned_suite_on_unseen_seeds(folder: Path) -> None:
    suite = tuned_suite(folder, seeds=[10, 11, 12, 13, 14])
    assert suite.seeds == (10, 11, 12, 13, 14) and suite.methods
    with pytest.raises(ValueError, match="tuning seed"):
        tuned_suite(folder, seeds=[0, 10])
