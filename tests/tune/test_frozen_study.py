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


def test_the_frozen_tunings_give_the_confirmation_suite_the_study_ran(tmp_path: Path) -> None:
    """benchmarks/study_tuned.py rebuilds configs/tuned/study_tuned.yaml (the suite the study's
    confirmation ran) from the frozen tunings alone."""
    import importlib.util

    import yaml

    path = TUNED.parents[1] / "benchmarks" / "study_tuned.py"
    spec = importlib.util.spec_from_file_location("study_tuned", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    b = module.best_baseline(TUNED / "methods")
    assert module.main(
        ["suite", str(tmp_path), str(TUNED / "methods"), str(TUNED / "guide"), b, str(TUNED / "plus")]
    ) == 0
    rebuilt = yaml.safe_load((tmp_path / "study_tuned.yaml").read_text())
    assert rebuilt == yaml.safe_load((TUNED / "study_tuned.yaml").read_text())
