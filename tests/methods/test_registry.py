"""The registry: every method declares what the trainer needs, lookups and compositions, the
settings sections, `carrot methods`, and no method name spelled outside carrot/methods."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from carrot.cli import main
from carrot.methods import (
    Method,
    default_method,
    get_method,
    method_names,
    register_method,
    registered,
    sections,
)
from carrot.train.config import ConfigError, apply_overrides, load_config
from carrot.train.schema import Config

SRC = Path(__file__).resolve().parents[2] / "src" / "carrot"
MIGRATED = ("ce", "label_smoothing", "carrot", "supcon", "supcon_carrot")


def test_every_method_declares_what_the_trainer_needs() -> None:
    names = method_names()
    assert names[:5] == list(MIGRATED) and {"mixup", "cutmix"} <= set(names)
    for name, cls in registered().items():
        assert cls.name == name and issubclass(cls, Method)
        assert cls.description and "\n" not in cls.description
        assert re.search(r"(19|20)\d\d", cls.reference), f"{name}: reference needs a year"
        assert cls.baseline is None or cls.baseline in names
        assert set(cls.uses) <= set(sections())
    assert default_method() == "carrot" and Config().method == "carrot"
    assert registered()["ce"].baseline is None
    assert registered()["supcon_carrot"].baseline == "supcon"


def test_no_method_name_is_spelled_outside_the_methods_package() -> None:
    names = set(method_names())
    found = []
    for path in SRC.rglob("*.py"):
        if "methods" in path.relative_to(SRC).parts[:1]:
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
        pattern = "([\"'])({})\\1".format("|".join(sorted(names)))  # a quoted name
        found += [f"{path.relative_to(SRC)}: grep {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not found, found


def test_sections_are_the_methods_settings_and_are_saved_at_the_top_level() -> None:
    assert {"carrot", "supcon", "label_smoothing", "mixup", "cutmix"} <= set(sections())
    cfg = load_config(None, ["mixup.alpha=0.4", "label_smoothing.smoothing=0.2"])
    assert cfg.mixup.alpha == 0.4 and cfg.label_smoothing.smoothing == 0.2
    from carrot.train.config import config_to_dict

    saved = config_to_dict(cfg)
    assert saved["mixup"]["alpha"] == 0.4 and "sections" not in saved and "explicit" not in saved
    assert list(saved)[:3] == ["method", "seed", "output_dir"] and list(saved)[-1] == "train"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mixup.alpha=0", r"mixup.alpha must be > 0, got 0.0"),
        ("cutmix.prob=2", r"cutmix.prob must be in \[0, 1\], got 2.0"),
        ("label_smoothing.smoothing=1", r"label_smoothing.smoothing must be in \[0, 1\), got 1.0"),
        ("supcon.temperature=0", r"supcon.temperature must be in \[0.001, 1000\], got 0.0"),
        ("carrot.lam=-1", r"carrot.lam must be in \[0, 10000\] .*got -1.0"),
        ("carrot.label_smoothing=1", r"carrot.label_smoothing must be in \[0, 1\)"),
    ],
)
def test_section_settings_are_validated_when_the_config_is_built(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_settings_of_earlier_versions_still_load() -> None:
    cfg = load_config(None, ["train.label_smoothing=0.2", "train.mixup=0", "train.cutmix=0.0"])
    assert cfg.label_smoothing.smoothing == 0.2
    old = {"train": {"label_smoothing": 0.05, "mixup": 0.0, "cutmix": 0.0, "lr": 0.1}}
    from carrot.train.config import config_from_dict

    cfg = config_from_dict(old)
    assert cfg.label_smoothing.smoothing == 0.05 and cfg.train.lr == 0.1
    with pytest.raises(ConfigError, match="Train with method=mixup or method=cutmix instead"):
        load_config(None, ["train.cutmix=1.0"])


def test_compositions_and_the_ones_that_cannot_be_defined() -> None:
    cls = get_method("supcon+carrot")
    assert cls.baseline == "supcon" and cls.expands and cls.min_per_class == 2
    assert cls.logs == ("supcon", "probe_ce", "ce", "kl", "aux_ce")
    assert get_method("supcon+carrot") is cls  # built once
    assert apply_overrides(Config(), ["method=label_smoothing+carrot"]).method == (
        "label_smoothing+carrot"
    )
    for base in ("mixup", "cutmix"):
        with pytest.raises(
            ConfigError,
            match=rf"method '{base}\+carrot' cannot be defined: carrot needs one hard label per "
            rf"image \(its per-class statistics\), and {base} mixes images, which then have two\.",
        ):
            load_config(None, [f"method={base}+carrot"])
    # maxent reads only the predictions (mixup+maxent is defined) but mixes nothing: CARROT
    # still gets one hard label per image on top of it.
    for spec in ("maxent+carrot", "mixup+maxent"):
        assert load_config(None, [f"method={spec}"]).method == spec
    with pytest.raises(ConfigError, match=r"mixup mixes images, which then have two"):
        load_config(None, ["method=mixup+maxent+carrot"])
    with pytest.raises(ConfigError, match="ce cannot be added on top of another method"):
        load_config(None, ["method=carrot+ce"])
    with pytest.raises(ConfigError, match="names a method twice"):
        load_config(None, ["method=carrot+carrot"])
    with pytest.raises(ConfigError, match="empty name around"):
        load_config(None, ["method=ce+"])
    with pytest.raises(ConfigError, match=r"train.k must be >= 2 for method=ce\+carrot, got 1"):
        load_config(None, ["method=ce+carrot", "train.k=1", "train.batch_size=8"])
    with pytest.raises(ConfigError, match="train.batch_size must be even for method=mixup"):
        load_config(None, ["method=mixup", "train.k=1", "train.batch_size=9"])


def test_register_method_refuses_what_it_cannot_list() -> None:
    with pytest.raises(ValueError, match="a method's name must be an identifier"):

        @register_method
        class Bad(Method):
            name = "a-b"
            description = "x"
            reference = "y, 2020"

    with pytest.raises(ValueError, match="method 'nodoc' must declare description"):

        @register_method
        class NoDoc(Method):
            name = "nodoc"
            reference = "y, 2020"

    with pytest.raises(ValueError, match="method 'ce' is already registered"):

        @register_method
        class Clash(Method):
            name = "ce"
            description = "x"
            reference = "y, 2020"

    assert "nodoc" not in registered() and registered()["ce"].__name__ == "CrossEntropy"


def test_carrot_methods_lists_every_method(capsys) -> None:
    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == method_names()
    by_name = {r["name"]: r for r in rows}
    assert by_name["cutmix"]["reference"].startswith("Yun et al.")
    assert by_name["mixup"]["baseline"] == "ce" and not by_name["mixup"]["needs_hard_labels"]
    mixup = {s["key"]: s for s in by_name["mixup"]["settings"]}
    assert mixup["mixup.alpha"]["default"] == 0.2 and mixup["mixup.alpha"]["range"] == "> 0"
    assert "Beta(α, α)" in mixup["mixup.alpha"]["doc"]
    carrot = {s["key"]: s for s in by_name["carrot"]["settings"]}
    assert carrot["carrot.max_gamma"]["default"] == 1.5
    assert by_name["carrot"]["addable"] and by_name["supcon_carrot"]["reads"] == [
        "supcon",
        "carrot",
    ]
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for name in method_names():
        assert re.search(rf"^{name}: ", text, re.M)
    assert "label_smoothing.smoothing = 0.1 (float, in [0, 1))" in text


def test_the_readme_and_docs_tables_agree_with_the_registry() -> None:
    """README's table is ``carrot methods --markdown``: each row it shows is the registry's row
    of today. A method missing from it is allowed (``carrot methods`` lists them all), so adding
    a method takes its file and its test; a stale or unknown row is not."""
    from carrot.methods.catalog import markdown_rows

    root = SRC.parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Methods") : readme.index("## Public API")]
    rows = markdown_rows()
    shown = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(shown) >= 11
    for line in shown:
        name = line.split("`")[1]
        assert line == rows.get(name), (
            f"README's row of {name!r} is stale: carrot methods --markdown"
        )
    # docs/methods.md's tables add measured columns: their methods exist, their baselines match.
    docs = (root / "docs" / "methods.md").read_text(encoding="utf-8")
    for line in docs.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.split("|")[1:-1]]
            name = cells[0].strip("`")
            assert name in rows, f"docs/methods.md lists {name!r}, which is not a method"
            if len(cells) == 6:  # the table with a baseline column
                baseline = registered()[name].baseline
                assert cells[3] == (f"`{baseline}`" if baseline else "—"), name


@pytest.mark.slow
def test_the_installed_carrot_methods_command(tmp_path: Path, capsys) -> None:
    """As a user runs it: the console script (or ``python -m carrot.cli``) in a fresh process."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "carrot"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "carrot.cli"]
    out = subprocess.run([*cmd, "methods", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [r["name"] for r in json.loads(out.stdout)] == method_names()
    with pytest.raises(SystemExit) as e:  # the help needs no process of its own
        main(["methods", "--help"])
    assert e.value.code == 0 and "--json" in capsys.readouterr().out
