"""Settings built once: the layers merged as plain data, the keys the user set known from the
merge, every setting's range and resumability read from its own field, frozen sections."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path

import pytest

from carrot.methods import sections
from carrot.settings import Range
from carrot.train.config import Config, ConfigError, apply_overrides, load_config
from carrot.train.merge import Merge
from carrot.train.schema import schema_fields


def _declared_ranges() -> list[tuple[str, Range, typing.Any]]:
    """Every ranged setting, the schema's and every method section's: (key, range, type)."""
    out = [
        (k, f.metadata["range"], tp)
        for k, (f, tp) in schema_fields().items()
        if "range" in f.metadata
    ]
    for name, settings in sections().items():
        hints = typing.get_type_hints(settings)
        for f in dataclasses.fields(settings):
            if "range" in f.metadata:
                out.append((f"{name}.{f.name}", f.metadata["range"], hints[f.name]))
    return out


def _outside(rule: Range, tp: typing.Any) -> str:
    """A value just outside ``rule`` (an integer where the setting is one), as typed."""
    whole = int in {tp, *typing.get_args(tp)}
    if rule.lo is not None:
        v = rule.lo if rule.open_lo else rule.lo - 1
    else:
        assert rule.hi is not None
        v = rule.hi if rule.open_hi else rule.hi + 1
    text = str(int(v)) if whole else repr(float(v))
    listed = list in {typing.get_origin(tp), *(typing.get_origin(a) for a in typing.get_args(tp))}
    return f"[{text}]" if listed else text


def test_every_declared_range_is_enforced_from_its_field() -> None:
    ranged = _declared_ranges()
    keys = {k for k, _, _ in ranged}
    assert {"seed", "train.lr", "data.mean", "carrot.lam_warmup", "supcon.probe_weight"} <= keys
    for key, rule, tp in ranged:
        value = _outside(rule, tp)
        with pytest.raises(ConfigError, match="^" + re.escape(f"{key} must be {rule.describe()}")):
            apply_overrides(Config(), [f"{key}={value}"])
        if int not in {tp, *typing.get_args(tp)} and "mean" not in key and "std" not in key:
            with pytest.raises(
                ConfigError, match="^" + re.escape(f"{key} must be {rule.describe()}, got nan")
            ):
                apply_overrides(Config(), [f"{key}=.nan"])


def test_a_setting_changed_in_its_field_changes_what_is_enforced(monkeypatch) -> None:
    # one declaration: the field's metadata is what validation reads (no second table)
    field, _ = schema_fields()["train.grad_clip"]
    assert apply_overrides(Config(), ["train.grad_clip=50"]).train.grad_clip == 50
    monkeypatch.setattr(field, "metadata", {"range": Range(0, 10)})
    with pytest.raises(ConfigError, match=r"train.grad_clip must be in \[0, 10\], got 50.0"):
        apply_overrides(Config(), ["train.grad_clip=50"])


def test_resumable_keys_are_the_fields_marked_resumable() -> None:
    from carrot.train.startup import RESUMABLE_KEYS

    marked = {k for k, (f, _) in schema_fields().items() if f.metadata.get("resumable")}
    assert set(RESUMABLE_KEYS) == marked
    assert {"train.epochs", "data.root", "train.loggers"} <= marked
    assert "train.lr" not in marked and "seed" not in marked


def test_the_explicit_keys_are_the_keys_of_the_user_layers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    # a value equal to its default is still one the user wrote; a moved key counts at its new place
    path.write_text("train:\n  lr: 0.05\n  label_smoothing: 0.2\ndata:\n  options: {a: 1}\n")
    cfg = load_config(path, ["carrot.max_gamma=2", "data.options.b=2", "train.mixup=0"])
    assert cfg.explicit == {
        "train.lr",
        "label_smoothing.smoothing",
        "data.options",
        "carrot.max_gamma",
    }
    assert cfg.data.options == {"a": 1, "b": 2} and cfg.label_smoothing.smoothing == 0.2
    assert load_config().explicit == set()


def test_the_merge_is_plain_data_and_leaves_its_base_alone() -> None:
    base = Config()
    merge = Merge(base)
    merge.overrides(["train.epochs=3", "data.options.x.y=1"])
    assert merge.values["train.epochs"] == 3 and merge.values["carrot.max_gamma"] == 1.5
    assert merge.values["data.options"] == {"x": {"y": 1}}
    assert all(not dataclasses.is_dataclass(v) for v in merge.values.values())
    assert merge.explicit == {"train.epochs", "data.options"}
    after = apply_overrides(base, ["train.epochs=3", "carrot.max_gamma=2"])
    assert after.train.epochs == 3 and after.carrot.max_gamma == 2.0
    assert base.train.epochs == 10 and base.carrot.max_gamma == 1.5 and base.explicit == set()
    # layers on a built config keep what it set explicitly: the guide still refuses them
    with pytest.raises(ConfigError, match=r"drop the other carrot settings \(carrot.max_gamma\)"):
        apply_overrides(after, ["carrot.guide=true"])


def test_sections_are_frozen() -> None:
    cfg = load_config(overrides=["carrot.guide=true"])
    assert cfg.carrot.max_gamma is None  # resolved into a new object, not written into the old
    for name in [*sections(), "data", "model", "train"]:
        settings = getattr(cfg, name)
        first = dataclasses.fields(settings)[0]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(settings, first.name, getattr(settings, first.name))


def test_the_carrot_section_is_the_operators_options_as_built() -> None:
    from carrot.functional import CEKLOptions, OperatorOptions
    from carrot.methods import MethodContext, build_method

    cfg = load_config(overrides=["carrot.max_gamma=3"])
    method = build_method(
        cfg.method, MethodContext(num_classes=4, embedding_dim=8, settings=cfg.sections)
    )
    assert method.operator is cfg.carrot and isinstance(method.operator, OperatorOptions)
    assert method.loss_options is cfg.carrot and isinstance(method.loss_options, CEKLOptions)
    assert math.isclose(method.operator.max_gamma or 0, 3.0)


def test_a_saved_config_of_an_earlier_version_still_builds() -> None:
    from carrot.train.config import config_from_dict, config_to_dict

    # what a resumed run reads from its checkpoint: moved and retired keys, a resolved guide
    saved = config_to_dict(load_config(overrides=["carrot.guide=true"]))
    saved["train"] |= {"label_smoothing": 0.0, "mixup": 0, "cutmix": 0.0}
    cfg = config_from_dict(saved)
    assert cfg.carrot.guide and cfg.carrot.max_gamma is None
    assert "label_smoothing.smoothing" in cfg.explicit and cfg.label_smoothing.smoothing == 0.0
    rebuilt = config_to_dict(cfg)
    assert rebuilt["train"] == {k: v for k, v in saved["train"].items() if k in rebuilt["train"]}
    assert {k: v for k, v in rebuilt.items() if k not in ("train", "label_smoothing")} == {
        k: v for k, v in saved.items() if k not in ("train", "label_smoothing")
    }
    saved["data"]["augment"] = "fgvc"
    with pytest.raises(ConfigError, match=r"^data.augment was renamed: use data.train_transform"):
        config_from_dict(saved)
