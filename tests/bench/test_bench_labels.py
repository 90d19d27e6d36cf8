"""Bench labels name the settings that ran, never a hard-coded default."""

from __future__ import annotations

from pathlib import Path

from carrot.bench.accuracy import ran_labels
from carrot.bench.grid import cells
from carrot.bench.suites import config_suite, trainer_method
from carrot.methods import get_method
from carrot.train import load_config


def test_a_label_is_filled_from_the_settings() -> None:
    cls = get_method("label_smoothing")
    assert cls.label_for() == "CE + label smoothing 0.1"  # the section's default
    assert cls.label_for({"label_smoothing": cls.settings_type(smoothing=0.25)}) == (
        "CE + label smoothing 0.25"
    )
    assert trainer_method("label_smoothing").label == "CE + label smoothing 0.1"
    assert get_method("ce").label_for() == "CE" and get_method("maxent").label_for() == "maxent"
    carrot = get_method("carrot")
    assert carrot.label_for() == "CARROT (λ = 1, T = 1, γ ≤ 1.5)"
    guided = load_config(None, ["carrot.guide=true", "carrot.T=1"]).sections
    assert carrot.label_for(guided) == "CARROT (the guide, λ = 1, T = 1, γ uncapped)"
    tuned = load_config(None, ["carrot.lam=0.5", "carrot.max_gamma=2"]).sections
    assert get_method("ce+carrot").label_for(tuned) == "CE + CARROT (λ = 0.5, T = 1, γ ≤ 2)"


def test_the_report_labels_the_epsilon_that_ran(tmp_path: Path) -> None:
    base = tmp_path / "tiny.yaml"
    base.write_text("data:\n  name: digits\n")
    suite = config_suite(
        base, ["label_smoothing.smoothing=0.2"], methods=["label_smoothing+carrot"], seeds=[0, 1]
    )
    labels = ran_labels(suite, cells(suite), tmp_path / "out")
    assert labels["label_smoothing"] == "CE + label smoothing 0.2"
    assert labels["label_smoothing+carrot"].startswith("CE + label smoothing 0.2 + CARROT")
    assert suite.methods["label_smoothing"].label == "CE + label smoothing 0.1"  # before it ran
    assert ran_labels(suite, [], tmp_path / "out") == {}
