"""The ablation and study suites: they parse and validate, every ablation variant is the guide's
recipe with one change, the recipe is the guide's, and the two suites share their common runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from carrot.bench.grid import Cell, cell_job, cells, pretrain_job
from carrot.bench.suites import load_suite
from carrot.train.config import load_config

OUT = Path("/tmp/bench-out")
# Operator options added for this ablation (carrot.radius_factor, carrot.radius_stat); a cell that
# sets one is only loaded where the config has it.
NEW_KEYS = ("radius_factor", "radius_stat")


def _key_values(overrides: tuple[str, ...]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides)


def _carrot_keys() -> set[str]:
    """The keys of the config's carrot section."""
    return {f.name for f in dataclasses.fields(load_config(None, []).carrot)}


def _available(overrides: tuple[str, ...]) -> bool:
    fields = _carrot_keys()
    return all(
        key.removeprefix("carrot.") in fields
        for key in _key_values(overrides)
        if key.removeprefix("carrot.") in NEW_KEYS
    )


def test_ablation_suite_parses_and_every_cell_validates() -> None:
    suite = load_suite("ablation")
    assert suite.seeds == (0, 1, 2, 3, 4)
    grid = dict(suite.grid)
    assert set(grid) == {"synth_hard", "synth_hard_ft"}
    assert {"factor1", "factor05", "median", "recipe", "ce"} <= set(grid["synth_hard_ft"])
    skipped = set()
    for cell in cells(suite, seeds=[0]):
        job = cell_job(suite, cell, OUT)
        if not _available(suite.methods[cell.method].overrides):
            skipped.add(cell.method)
            continue
        cfg = job.load()  # the trainer's own validation of every key and value
        assert cfg.seed == 0 and cfg.method == ("ce" if cell.method.startswith("ce") else "carrot")
        if cell.method == "factor05":
            assert cfg.carrot.radius_factor == 0.5  # type: ignore[attr-defined]
        if cell.method == "median":
            assert cfg.carrot.radius_stat == "median"  # type: ignore[attr-defined]
    have = _carrot_keys()
    assert skipped == (set() if set(NEW_KEYS) <= have else {"factor1", "factor05", "median"})


def test_every_ablation_variant_is_the_recipe_with_one_change() -> None:
    suite = load_suite("ablation")
    recipe = _key_values(suite.methods["recipe"].overrides)
    assert suite.methods["recipe"].baseline == "ce"
    expected = {
        "no_detach": {"carrot.detach_stats": "false"},
        "k2": {"train.k": "2"},
        "k8": {"train.k": "8"},
        "lam05": {"carrot.lam": "0.5"},
        "lam2": {"carrot.lam": "2"},
        "t05": {"carrot.T": "0.5"},
        "t2": {"carrot.T": "2"},
        "kl_z_plus": {"carrot.kl_direction": "z_plus"},
        "kl_symmetric": {"carrot.kl_direction": "symmetric"},
        "aux_ce": {"carrot.aux_ce_weight": "1"},
        "cap15": {"carrot.max_gamma": "1.5"},
        "memory": {"carrot.memory": "true"},
        "factor1": {"carrot.radius_factor": "1.0"},
        "factor05": {"carrot.radius_factor": "0.5"},
        "median": {"carrot.radius_stat": "median"},
    }
    paired = {n for n, m in suite.methods.items() if m.baseline == "recipe"}
    assert paired == set(expected)
    for name, change in expected.items():
        got = _key_values(suite.methods[name].overrides)
        diff = {k: v for k, v in got.items() if recipe.get(k) != v}
        assert diff == change, name
        assert set(recipe) <= set(got), name  # nothing of the recipe left to the defaults
    for name, k in (("ce_k2", "2"), ("ce_k8", "8")):
        assert _key_values(suite.methods[name].overrides) == {"method": "ce", "train.k": k}
        assert suite.methods[name].baseline == "ce"


def test_the_recipe_is_the_guides() -> None:
    # The recipe spelled out resolves to what carrot.guide=true runs (the packaged carrot_guide).
    suite = load_suite("ablation")
    cfg = cell_job(suite, Cell("synth_hard", "recipe", 0), OUT).load()
    guide = load_config(None, list(suite.methods["carrot_guide"].overrides)).carrot
    got, want = dataclasses.asdict(cfg.carrot), dataclasses.asdict(guide)
    assert got.pop("guide") is False and want.pop("guide") is True
    assert got == want
    assert cfg.train.k == 4 and cfg.train.batch_size == 64
    k8 = cell_job(suite, Cell("synth_hard", "k8", 0), OUT).load()
    assert (k8.train.k, k8.train.batch_size) == (8, 64)  # K changes at a fixed batch size


@pytest.mark.parametrize("dataset", ["synth_hard", "synth_hard_ft"])
def test_study_and_ablation_share_their_common_runs(dataset: str) -> None:
    study, ablation = load_suite("study"), load_suite("ablation")
    assert study.common == ablation.common and study.pins == ablation.pins == ()
    assert study.datasets[dataset] == ablation.datasets[dataset]
    for seed in (0, 7):
        a = cell_job(study, Cell(dataset, "ce", seed), OUT)
        b = cell_job(ablation, Cell(dataset, "ce", seed), OUT)
        assert a == b  # the same run folder with the same settings: run once, used by both
        pa = pretrain_job(study, "synth200", seed, OUT)
        assert pa == pretrain_job(ablation, "synth200", seed, OUT)


def test_study_suite_parses_and_validates() -> None:
    suite = load_suite("study")
    assert set(suite.datasets) == {"digits", "fmnist100", "synth_hard", "synth_hard_ft"}
    assert suite.datasets["synth_hard_ft"].pretrained == "synth200"
    for cell in cells(suite, seeds=[5]):
        cfg = cell_job(suite, cell, OUT).load()
        assert cfg.seed == 5
