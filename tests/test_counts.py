"""One argument may not imply unbounded work: every count (seed ranges, grids, jobs, batch sizes,
epochs, classes, image sizes) is checked against what it implies before anything is allocated
(issue 32, item 1)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from carrot.bench.accuracy import run_suite
from carrot.bench.suites import suite_from_dict
from carrot.counts import MAX_CELLS, MAX_SEEDS, check_count, parse_seeds
from carrot.train.config import ConfigError, load_config
from cli_run import carrot_cli, one_line_error

HUGE = "1" + "0" * 400


def test_seed_ranges_are_counted_before_they_are_built() -> None:
    start = time.perf_counter()
    for text in ("0-99999999", "0-6000,7000-12000", f"0-{10**18}", "5,0-9999"):
        with pytest.raises(ValueError, match=f"--seeds must name at most {MAX_SEEDS} seeds"):
            parse_seeds(text)
    assert time.perf_counter() - start < 1.0  # nothing of the size of the range was built


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must look like 0-4"),
        ("-1", "must look like 0-4"),
        ("a-b", "must look like 0-4"),
        ("5-3", "LO <= HI"),
        ("0-4,2", "must not name a seed twice"),
        (HUGE, "must look like 0-4"),
        ("9999999999999999999", r"in \[0, 2\*\*63 - 1\]"),
    ],
)
def test_bad_seed_texts_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        parse_seeds(text)
    assert "\n" not in str(e.value)


def test_good_seed_texts() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,5") == [0, 2, 5]
    assert parse_seeds("0-1,10-11") == [0, 1, 10, 11]
    assert len(parse_seeds(f"0-{MAX_SEEDS - 1}")) == MAX_SEEDS


@pytest.mark.parametrize("value", [0, 1025, -3, True, 10**400])
def test_check_count(value: int) -> None:
    with pytest.raises(ValueError, match=r"--jobs must be an integer in \[1, 1024\]"):
        check_count(value, "--jobs", hi=1024)
    assert check_count(None, "--jobs", hi=1) is None and check_count(7, "--jobs", hi=7) == 7


def _suite(n_methods: int, n_seeds: int, *, seeds_list: list[int] | None = None) -> dict:
    variants = {
        f"v{i}": {"baseline": "ce", "overrides": {"method": "carrot", "carrot.lam": i}}
        for i in range(n_methods)
    }
    return {
        "seeds": seeds_list if seeds_list is not None else list(range(n_seeds)),
        "datasets": {"digits": {"overrides": ["data.name=digits"]}},
        "variants": variants,
        "methods": list(variants),
    }


def test_a_grid_over_the_cap_is_refused_before_it_is_built(tmp_path: Path) -> None:
    suite = suite_from_dict(_suite(11, MAX_SEEDS), name="big", source="big.yaml")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=f"the grid must hold at most {MAX_CELLS} runs"):
        run_suite(suite, out, report_only=True)
    with pytest.raises(ValueError, match="11 dataset × method pairs × 10000 seeds"):
        run_suite(suite, out, seeds=range(MAX_SEEDS), methods=[f"v{i}" for i in range(11)])
    assert not out.exists()


@pytest.mark.parametrize("seeds", [list(range(MAX_SEEDS + 1)), [0, 0], [2**63], [10**400]])
def test_suite_seeds_are_bounded(seeds: list[int]) -> None:
    with pytest.raises(ValueError, match="seeds must be a list of 1 to 10000 distinct integers"):
        suite_from_dict(_suite(1, 0, seeds_list=seeds), name="s", source="s.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"train.epochs={HUGE}", r"train.epochs must be in \[1, 100000\]"),
        ("train.epochs=1000000", r"train.epochs must be in \[1, 100000\]"),
        ("model.embedding_dim=100000000000", r"model.embedding_dim must be in \[1, 65536\]"),
        ("train.eval_batch_size=1000000000", r"train.eval_batch_size must be in \[1, 65536\]"),
        (f"seed={HUGE}", "seed must be in"),
        (f"train.lr={HUGE}", "train.lr must be a finite number"),
        (f"carrot.lam={HUGE}", "carrot.lam must be a finite number"),
    ],
)
def test_config_counts_are_bounded(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize(
    "options",
    [
        {"num_superclasses": 10**9},
        {"classes_per_superclass": 100_000, "num_superclasses": 100},
        {"image_size": 100_000},
        {"train_per_class": 10**12},
    ],
)
def test_the_synthetic_set_is_checked_before_it_is_generated(options: dict) -> None:
    from carrot.data.synthetic import SyntheticFineGrained

    start = time.perf_counter()
    with pytest.raises(ValueError, match="data.options of the synthetic set must imply at most"):
        SyntheticFineGrained(split="train", **options)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "accuracy", "--jobs", "100000000"], r"--jobs must be an integer in \[1, 1024\]"),
        (["bench", "accuracy", "--threads", "0"], "--threads must be an integer"),
        (["bench", "accuracy", "--cpus-per-cell", "99999999"], "--cpus-per-cell must be"),
        (["bench", "accuracy", "--seeds", "0-99999999"], "--seeds must name at most 10000"),
        (["bench", "speed", "--image-size", "1000000"], "--image-size must be an integer"),
        (["bench", "speed", "--batch", "100000000"], "--batch must be an integer"),
        (["predict", "--checkpoint", "x.pt", "a.png", "--batch-size", "10000000"], "--batch-size"),
        (["predict", "--checkpoint", "x.pt", "a.png", "--workers", "100000"], "--workers"),
        (["predict", "--checkpoint", "x.pt", "a.png", "--top-k", "0"], "--top-k"),
    ],
)
def test_cli_counts_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from carrot.cli import main

    if argv[:2] == ["bench", "accuracy"]:
        argv = [*argv, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_huge_seed_range_with_report_only_is_one_line_at_once(tmp_path: Path) -> None:
    """Was: nothing printed, 7 GB of memory."""
    start = time.perf_counter()
    done = carrot_cli(
        "bench", "accuracy", "--seeds", "0-99999999", "--report-only", "--out", tmp_path / "o",
        timeout=60,
    )  # fmt: skip
    one_line_error(done, "--seeds must name at most 10000 seeds", "0-99999999")
    assert time.perf_counter() - start < 60
    done = carrot_cli("bench", "accuracy", "--jobs", "1000000000", "--out", tmp_path / "o")
    one_line_error(done, "--jobs must be an integer in [1, 1024]")
    assert not (tmp_path / "o").exists()
