"""carrot.paths: plain names, paths kept inside a folder, output_dir placeholders, file modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from carrot.paths import default_file_mode, fill_placeholders, inside, plain_name
from carrot.train.config import Config, ConfigError, config_to_dict, flatten, load_config
from cli_run import carrot_cli, one_line_error


@pytest.mark.parametrize("name", ["ce", "carrot_l5", "supcon+carrot", "v1.2", "A-b=c", "_x"])
def test_plain_names_pass(name: str) -> None:
    assert plain_name(name, "method name") == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "a/b", "a\\b", "/abs", "..hidden", "a..b", ".git", "-rf", "a b",
     "x\0", "é/", "a" * 200, 5, None, "~root", "$HOME", "a\nb"],
)  # fmt: skip
def test_other_names_are_refused_in_one_line(name: object) -> None:
    with pytest.raises(ValueError, match=r"^method name must be a plain name .*got") as e:
        plain_name(name, "method name")
    assert "\n" not in str(e.value).replace(repr(name), "")


def test_inside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    assert inside(out / "runs" / "a", out, "run") == out / "runs" / "a"
    for bad in (out / ".." / "victim", out, tmp_path / "elsewhere", Path("/etc/x")):
        with pytest.raises(ValueError, match="is not inside"):
            inside(bad, out, "run")
    (tmp_path / "victim").mkdir()
    (out / "runs" / "link").symlink_to(tmp_path / "victim")
    with pytest.raises(ValueError, match="is not inside"):
        inside(out / "runs" / "link" / "s0", out, "run")


def _values(**over: object) -> dict[str, object]:
    return flatten(config_to_dict(load_config(None, [f"{k}={v}" for k, v in over.items()])))


def test_placeholders_name_keys() -> None:
    values = _values(method="ce", seed=3)
    assert fill_placeholders("runs/{data.name}-{method}-s{seed}", values) == "runs/digits-ce-s3"
    assert fill_placeholders("r/{train.lr}/{{literal}}", values) == "r/0.05/{literal}"
    assert fill_placeholders("r/{train.amp}-{model.pretrained}", values) == "r/off-false"
    assert fill_placeholders("r/s{seed:03d}-{train.lr:.3f}", values) == "r/s003-0.050"


@pytest.mark.parametrize(
    "template",
    [
        "/x/{data.__class__.__init__.__globals__[os].environ[HOME]}",
        "/x/{data.__class__}",
        "/x/{data.name.__class__}",
        "/x/{data}",
        "/x/{data[name]}",
        "/x/{seed!r}",
        "/x/{seed:>1000000000}",
        "/x/{seed:{seed}}",
        "/x/{method:d}",
        "/x/{method:{seed}}",
        "/x/{0}",
        "/x/{}",
        "/x/{nope}",
        "/x/{data.options}",
        "/x/{train.nothing}",
        "/x/{data.name",
        "/x/}",
    ],
)
def test_other_placeholders_are_refused(template: str) -> None:
    cfg = Config()
    cfg.output_dir = template
    with pytest.raises(ConfigError) as e:
        cfg.run_dir()
    assert "\n" not in str(e.value)
    assert os.environ.get("HOME", "\0") not in str(e.value)


def test_placeholder_values_that_would_leave_the_folder_are_refused() -> None:
    cfg = load_config(None, ["data.name=imagefolder", "data.root=/data/pets"])
    cfg.output_dir = "runs/{data.root}"
    with pytest.raises(ConfigError, match=r"placeholder \{data.root\} has the value '/data/pets'"):
        cfg.run_dir()


def test_default_file_mode_follows_the_umask(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_text("x")
    assert default_file_mode() == probe.stat().st_mode & 0o777


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("r/{train.lr:>10}", r"\{train.lr\} has the value '      0.05'.*a space"),
        ("r/{seed:>30}", r"\{seed\} has the value .*a space"),
        ("r/{train.lr:10.4f}", r"\{train.lr\} has the value '    0.0500'"),
        ("r/{train.loggers}", r"\{train.loggers\} is a list \(\['csv'\]\)"),
        ("r/{data.mean}", r"\{data.mean\} is null \(unset\)"),
        ("r/{data.name}", r"has the value 'a\\tb'"),
    ],
)
def test_placeholders_that_would_make_odd_folder_names_are_refused(
    template: str, message: str
) -> None:
    values = {"train.lr": 0.05, "seed": 0, "train.loggers": ["csv"], "data.mean": None,
              "data.name": "a\tb" if "data.name" in template else "digits"}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        fill_placeholders(template, values)


def test_an_unquoted_placeholder_says_to_quote_it(tmp_path: Path) -> None:
    from carrot.train.config import ConfigError, load_config

    with pytest.raises(
        ConfigError,
        match=r"output_dir must be a string, got the YAML mapping .*quote it, e.g. output_dir='\{train.lr\}'",
    ):
        load_config(None, ["output_dir={train.lr}"])
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: {method}\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml: output_dir must be a string, got the YAML mapping"
    ):
        load_config(config)
    assert str(load_config(None, ["output_dir='{train.lr}'"]).run_dir()) == "0.05"


@pytest.mark.slow
def test_output_dir_placeholders_cannot_reach_the_environment(tmp_path: Path) -> None:
    for template in (
        "{data.__class__.__init__.__globals__[os].environ[CARROT_PROBE_SECRET]}",
        "{train.__class__.__module__}",
        "{seed!r:>{seed}}",
    ):
        done = carrot_cli(
            "train", "train.device=cpu", f"output_dir={tmp_path}/x/{template}",
            env={"CARROT_PROBE_SECRET": "hunter2"},
        )  # fmt: skip
        one_line_error(done, "output_dir")
        assert "hunter2" not in done.stderr + done.stdout
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_runs_files_share_one_mode(probe_run: Path) -> None:
    modes = {
        str(p.relative_to(probe_run / "run")): stat.S_IMODE(p.stat().st_mode)
        for p in (probe_run / "run").rglob("*")
        if p.is_file()
    }
    assert "checkpoints/last.pt" in modes and "metrics.jsonl" in modes
    assert len(set(modes.values())) == 1, modes
