"""A method's baseline chain must end: a variant that is its own baseline, or a cycle of
baselines, is one line, in a suite and in a methods file (issue 32, item 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from carrot.bench.suites import load_methods, suite_from_dict
from cli_run import carrot_cli, one_line_error

SELF = {"x": {"baseline": "x", "overrides": {"method": "carrot"}}}
CYCLE = {
    "a": {"baseline": "b", "overrides": {"method": "carrot"}},
    "b": {"baseline": "a", "overrides": {"method": "ce"}},
}
LONG_CYCLE = {
    "a": {"baseline": "b", "overrides": {"method": "carrot"}},
    "b": {"baseline": "c", "overrides": {"method": "ce"}},
    "c": {"baseline": "a", "overrides": {"method": "ce"}},
}


def _suite(variants: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    return {
        "seeds": [0],
        "datasets": {"digits": {"overrides": ["data.name=digits"]}},
        "variants": variants,
        "methods": methods,
    }


@pytest.mark.parametrize(
    ("variants", "needle"),
    [(SELF, "leads back to itself"), (CYCLE, "a cycle (a → b → a)"), (LONG_CYCLE, "a → b → c → a")],
)
def test_a_suite_variant_whose_baselines_come_back_is_refused(
    variants: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValueError, match="baseline must name another method") as e:
        suite_from_dict(_suite(variants, list(variants)), name="s", source="s.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_pretraining_may_not_name_a_pretraining() -> None:
    data = _suite({}, ["ce"])
    data["pretrain"] = {"src": {"overrides": ["data.name=synthetic"], "pretrained": "src"}}
    with pytest.raises(ValueError, match=r"pretrain.src.pretrained must be absent"):
        suite_from_dict(data, name="s", source="s.yaml")


@pytest.mark.parametrize("text", ["x: {baseline: x, overrides: {method: carrot}}\n",
                                  "a: {baseline: b, overrides: {method: carrot}}\n"
                                  "b: {baseline: a, overrides: {method: ce}}\n"])  # fmt: skip
def test_a_methods_file_whose_baselines_come_back_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="baseline must name another method"):
        load_methods(path)


def test_a_baseline_chain_that_ends_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "a: {baseline: b, overrides: {method: carrot}}\nb: {baseline: ce, overrides: {method: ce}}\n"
    )
    assert load_methods(path)["a"].baseline == "b"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["methods-file", "suite"])
def test_the_cli_refuses_a_self_baseline_in_one_line(tmp_path: Path, mode: str) -> None:
    """Was a RecursionError (methods file, --config) and a grid comparing x with x (suite)."""
    out = tmp_path / "out"
    if mode == "methods-file":
        methods = tmp_path / "m.yaml"
        methods.write_text("x: {baseline: x, overrides: {method: carrot}}\n")
        base = tmp_path / "base.yaml"
        base.write_text("data: {name: digits}\ntrain: {device: cpu}\n")
        args: tuple[object, ...] = ("--config", base, "--methods-file", methods, "--methods", "x")
    else:
        suite = tmp_path / "s.yaml"
        suite.write_text(
            "seeds: [0]\ndatasets: {digits: {overrides: [data.name=digits]}}\n"
            "variants: {a: {baseline: b, overrides: {method: carrot}},"
            " b: {baseline: a, overrides: {method: ce}}}\nmethods: [a, b]\n"
        )
        args = ("--suite", suite)
    done = carrot_cli("bench", "accuracy", *args, "--out", out, "--seeds", "0", timeout=120)
    one_line_error(done, "baseline must name another method", "leads back to")
    assert not out.exists()
