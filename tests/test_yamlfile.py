"""The one YAML reader (carrot.yamlfile): YAML 1.2 scalars, no aliases, no repeated keys, bounded
nesting, and its errors as one line naming the file, in every file the project reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from carrot.bench.suites import load_methods, load_suite
from carrot.train.config import ConfigError, load_config
from carrot.yamlfile import MAX_DEPTH, load_yaml, yaml_error
from cli_run import carrot_cli, one_line_error


def _error(text: str) -> str:
    with pytest.raises(yaml.YAMLError) as e:
        load_yaml(text)
    return yaml_error(e.value)


@pytest.mark.parametrize(
    ("text", "key", "first", "line"),
    [
        ("train:\n  lr: 1\ntrain:\n  epochs: 2\n", "train", 1, 3),  # two sections
        ("train:\n  lr: 1\n  epochs: 3\n  lr: 2\n", "lr", 2, 4),  # a key twice in a section
        ("train: {lr: 1, lr: 2}\n", "lr", 1, 1),  # flow style, one line
        ("'seed': 1\nseed: 2\n", "seed", 1, 2),  # quoted and plain spell the same key
        ("- a: 1\n  a: 2\n", "a", 1, 2),  # inside a list
    ],
)
def test_a_repeated_key_is_refused_with_its_lines(
    text: str, key: str, first: int, line: int
) -> None:
    message = _error(text)
    assert f"found the key {key!r} twice" in message and f"first on line {first}" in message
    assert f"(line {line}," in message


def test_keys_that_only_look_alike_are_not_repeats() -> None:
    assert load_yaml("1: a\n'1': b\n") == {1: "a", "1": "b"}
    assert load_yaml("- {a: 1}\n- {a: 2}\n") == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1_000", "1_000"),  # YAML 1.1 reads 1000
        ("0b11", "0b11"),
        ("1:30", "1:30"),  # YAML 1.1 reads 90 (base 60)
        ("2024-01-01", "2024-01-01"),  # YAML 1.1 reads a date
        ("on", "on"),
        ("017", 17),  # decimal, not octal
        ("0o17", 15),
        ("0x1F", 31),
        ("+1", 1),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("-.inf", float("-inf")),
        ("~", None),
        ("'0.5'", "0.5"),
    ],
)
def test_scalars_follow_yaml_1_2(text: str, value: object) -> None:
    assert load_yaml(f"a: {text}\n") == {"a": value}


def test_nesting_is_bounded_before_python_runs_out_of_stack() -> None:
    assert load_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    for deep in ("a: " + "[" * 10_000 + "]" * 10_000, "a:\n" + "".join(
        "  " * i + f"k{i}:\n" for i in range(1, 2_000)
    ) + "  " * 2_000 + "v: 1\n"):  # fmt: skip
        assert f"nesting deeper than {MAX_DEPTH} levels" in _error(deep)


def test_every_file_kind_refuses_a_repeated_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 1\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml is not valid YAML: found the key 'train' twice"):
        load_config(config)
    methods = tmp_path / "m.yaml"
    methods.write_text(
        "v: {baseline: ce, overrides: [method=carrot]}\nv: {baseline: ce, overrides: [method=ce]}\n"
    )
    with pytest.raises(ValueError, match=r"m.yaml is not valid YAML: found the key 'v' twice"):
        load_methods(methods)
    suite = tmp_path / "s.yaml"
    suite.write_text("seeds: [0]\nseeds: [1]\ndatasets: {d: {config: c.yaml}}\nmethods: [ce]\n")
    with pytest.raises(ValueError, match=r"s.yaml is not valid YAML: found the key 'seeds' twice"):
        load_suite(suite)


def test_a_saved_run_config_with_a_repeated_key_is_one_line(tmp_path: Path) -> None:
    from carrot.bench.grid import Job, check_same_settings

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\nseed: 1\n")
    job = Job(run_dir=run, config=None, overrides=("train.device=cpu",))
    with pytest.raises(ValueError, match=r"run/config.yaml is not valid YAML: .*'seed' twice"):
        check_same_settings(job)


@pytest.mark.parametrize(
    ("override", "key"),
    [("isda.lam0='0.5'", "isda.lam0"), ("train.epochs=1_000", "train.epochs"),
     ("train.lr='1e-3'", "train.lr")],
)  # fmt: skip
def test_a_string_is_not_read_as_a_number(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key} must be .* got the string .*plain number"):
        load_config(None, [override])


@pytest.mark.slow
def test_the_cli_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "twice.yaml"
    config.write_text("train:\n  epochs: 1\n  lr: 0.1\n  epochs: 5\n")
    one_line_error(
        carrot_cli("train", "--config", config), "twice.yaml", "'epochs' twice", "line 4"
    )
    deep = tmp_path / "deep.yaml"
    deep.write_text("train: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n")
    one_line_error(carrot_cli("train", "--config", deep), "deep.yaml", "nesting deeper")
