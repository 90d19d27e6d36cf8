"""The config schema: YAML, overrides, errors that name the key, the saved config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from carrot.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    load_config,
    save_config,
)

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_built_in_run() -> None:
    cfg = load_config()
    assert (cfg.data.name, cfg.method, cfg.model.backbone) == ("digits", "carrot", "carrot_cnn")
    assert cfg.run_dir() == Path("runs/digits-carrot-s0")


def test_configs_default_yaml_is_exactly_the_built_in_defaults(capsys) -> None:
    """The file the docs call the default: the same saved config as no file, and carrot.guide
    runs the same with or without it (it writes no carrot recipe key, which the guide refuses
    when set to another value)."""
    from carrot.cli import main

    path = REPO / "configs" / "default.yaml"
    assert config_to_dict(load_config(path)) == config_to_dict(load_config(None))
    guided = config_to_dict(load_config(path, ["carrot.guide=true"]))
    assert guided == config_to_dict(load_config(None, ["carrot.guide=true"]))
    assert guided["carrot"]["max_gamma"] is None
    assert main(["train", "--print-config", "--config", str(path), "carrot.guide=true"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["carrot"] == guided["carrot"]


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("method: supcon\ntrain:\n  lr: 0.1\n  epochs: 7\ndata:\n  name: cub\n")
    cfg = load_config(
        path, ["train.lr=1e-3", "carrot.max_gamma=4", "data.options.annotation_level=family"]
    )
    assert cfg.method == "supcon" and cfg.train.epochs == 7 and cfg.data.name == "cub"
    assert cfg.train.lr == 1e-3  # command line wins; "1e-3" is a float, not YAML's string
    assert cfg.carrot.max_gamma == 4.0 and isinstance(cfg.carrot.max_gamma, float)
    assert cfg.data.options == {"annotation_level": "family"}


@pytest.mark.parametrize(
    ("override", "value"),
    [
        ("train.amp=bf16", "bf16"),
        ("train.grad_clip=null", None),
        ("train.channels_last=true", True),
        ("model.embedding_dim=128", 128),
        ("data.root=/data/x", "/data/x"),
    ],
)
def test_override_types(override: str, value: object) -> None:
    cfg = apply_overrides(Config(), [override])
    section, key = override.split("=")[0].split(".")
    assert getattr(getattr(cfg, section), key) == value


def test_unknown_key_lists_valid_keys_and_suggests() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown config key 'lrr' in train\. Did you mean 'lr'\? Valid keys in train: .*accum_steps.*epochs",
    ):
        apply_overrides(Config(), ["train.lrr=0.1"])


def test_unknown_section() -> None:
    with pytest.raises(
        ConfigError, match="unknown config key 'trian' at the top level. Did you mean 'train'"
    ):
        apply_overrides(Config(), ["trian.lr=0.1"])


def test_unknown_key_in_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbon: resnet50\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'backbon' in model"):
        load_config(path)


def test_wrong_type_names_key_and_type() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs must be int, got 'ten' \(str\)"):
        apply_overrides(Config(), ["train.epochs=ten"])


def test_wrong_choice() -> None:
    with pytest.raises(
        ConfigError,
        match=r"method must be one of 'ce', 'label_smoothing', 'carrot', 'supcon', 'supcon_carrot', .*"
        r"or BASE\+ADDED \(e.g. ce\+carrot\), got 'arcface'",
    ):
        apply_overrides(Config(), ["method=arcface"])


def test_section_needs_keys() -> None:
    with pytest.raises(ConfigError, match=r"train is a section; set its keys"):
        apply_overrides(Config(), ["train=3"])


def test_scalar_has_no_keys() -> None:
    with pytest.raises(ConfigError, match=r"train.lr is not a section"):
        apply_overrides(Config(), ["train.lr.x=3"])


def test_override_syntax() -> None:
    with pytest.raises(ConfigError, match="overrides must look like section.key=value"):
        apply_overrides(Config(), ["train.lr"])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=30", "train.batch_size must be a positive multiple of train.k=4"),
        (
            "train.mixup=0.2",
            "mixup and train.cutmix are not supported: mixed images have soft labels",
        ),
        ("carrot.max_gamma=0.5", "carrot.max_gamma must be >= 1 or null"),
        ("train.accum_steps=0", r"train.accum_steps must be in \[1, 65536\]"),
        ("carrot.T=0", r"carrot.T must be in \[0.001, 1000\]"),
    ],
)
def test_cross_field_rules(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_output_dir_placeholders() -> None:
    cfg = apply_overrides(
        Config(),
        ["data.name=cub", "method=ce", "seed=3", "output_dir=out/{data.name}/{method}-{seed}"],
    )
    assert cfg.run_dir() == Path("out/cub/ce-3")
    cfg.output_dir = "out/{nope}"
    with pytest.raises(ConfigError, match=r"placeholder \{nope\} is not a config key"):
        cfg.run_dir()


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(
        None, ["method=supcon_carrot", "train.amp=bf16", "data.options.difficulty=0.8"]
    )
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)


def test_every_shipped_config_loads() -> None:
    files = sorted((REPO / "configs").glob("*.yaml"))
    assert len(files) >= 11, (
        "the built-in default plus ResNet-50 and ViT-B/16 recipes for five datasets"
    )
    for path in files:
        cfg = load_config(path)
        text = path.read_text()
        if path.stem != "default":
            assert "source:" in text.lower() or "# from" in text.lower(), (
                f"{path.name} must cite its recipe"
            )
            assert cfg.data.root is not None or cfg.data.name in (
                "digits",
                "fashion_mnist",
                "synthetic",
            )
        assert yaml.safe_load(text) is not None


def test_yaml_1_2_scalars_on_the_command_line_and_in_files(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "train:\n  amp: off\n  weight_decay: 1e-4\ndata:\n  options:\n    x: 1e-3\n    y: yes\n"
    )
    cfg = load_config(path, ["data.options.z=123", "train.channels_last=on"])
    assert cfg.train.amp == "off" and cfg.train.weight_decay == 1e-4
    assert cfg.data.options == {"x": 1e-3, "y": "yes", "z": 123}
    assert cfg.train.channels_last is True
    assert apply_overrides(Config(), ["train.amp=off"]).train.amp == "off"


def test_options_nested_under_a_value() -> None:
    with pytest.raises(ConfigError, match=r"data.options.a is a value, not a mapping"):
        apply_overrides(Config(), ["data.options.a=1", "data.options.a.b=2"])


def test_methods_that_need_two_images_per_class() -> None:
    with pytest.raises(ConfigError, match=r"train.k must be >= 2 for method=carrot, got 1"):
        apply_overrides(Config(), ["train.k=1", "train.batch_size=8"])
    assert apply_overrides(Config(), ["method=ce", "train.k=1", "train.batch_size=8"]).train.k == 1


def test_guide_flag_rejects_other_carrot_settings(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), ["carrot.guide=true"])
    assert cfg.carrot.guide and cfg.carrot.max_gamma is None  # resolved: the saved config shows it
    assert (
        apply_overrides(Config(), ["carrot.max_gamma=null", "carrot.guide=true"]).carrot.max_gamma
        is None
    )
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").carrot.max_gamma is None
    with pytest.raises(
        ConfigError,
        match=r"carrot.guide=true runs the guide's exact recipe; drop the other carrot settings \(carrot.max_gamma\)",
    ):
        apply_overrides(Config(), ["carrot.guide=true", "carrot.max_gamma=2"])
    assert Config().carrot.max_gamma == 1.5  # the trainer's recommended default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("carrot.lam_warmup=1.5", r"carrot.lam_warmup must be in \[0, 1\]"),
        ("carrot.memory_momentum=1", r"carrot.memory_momentum must be in \[0, 1\)"),
        ("carrot.space=hyperbolic", "carrot.space must be one of 'euclidean', 'angular'"),
        ("train.collapse_gamma_mean=0.5", "train.collapse_gamma_mean must be >= 1"),
        ("train.collapse_radius_drop=1", r"train.collapse_radius_drop must be in \[0, 1\)"),
        ("carrot.eps=-1", "carrot.eps must be >= 0"),
        ("supcon.probe_weight=-1", r"supcon.probe_weight must be in \[0, 10000\]"),
    ],
)
def test_more_bounds(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.min_lr=-0.01", r"train.min_lr must be in \[0, 1000\], got -0.01"),
        ("train.backbone_lr_mult=-1", r"train.backbone_lr_mult must be >= 0, got -1.0"),
        ("train.warmup_epochs=.inf", r"train.warmup_epochs must be >= 0, got inf"),
        ("train.warmup_epochs=.nan", r"train.warmup_epochs must be >= 0, got nan"),
        ("train.lr=1e300", r"train.lr must be in \(0, 1000\], got 1e\+300"),
        ("train.warmup_epochs=20", r"train.warmup_epochs must be <= train.epochs=10, got 20.0"),
        ("train.min_lr=0.5", r"train.min_lr must be <= train.lr=0.05, got 0.5"),
        ("train.layer_decay=0", r"train.layer_decay must be in \(0, 1\], got 0.0"),
        ("data.crop_pct=1.5", r"data.crop_pct must be in \(0, 1\], got 1.5"),
        ("data.random_erasing=2", r"data.random_erasing must be in \[0, 1\], got 2.0"),
        ("data.std=[0.5,0,0.5]", r"data.std must be in \(0, 10\], got \[0.5, 0.0, 0.5\]"),
        ("data.mean=[0.5,0.5]", r"data.mean must list 1 or 3 values"),
        ("data.mean=0.5", r"data.mean must be a list of float or null"),
        ("model.drop_rate=1", r"model.drop_rate must be in \[0, 1\), got 1.0"),
        ("data.num_workers=-1", r"data.num_workers must be in \[0, 1024\], got -1"),
        ("seed=-3", r"seed must be in \[0, 9.22337e\+18\], got -3"),
        ("data.randaugment=autoaug", r"data.randaugment must be a timm RandAugment spec"),
    ],
)
def test_every_numeric_setting_is_range_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def _numeric_keys(obj: object, prefix: str = "") -> list[str]:
    import dataclasses
    import typing

    from carrot.functional import OperatorOptions

    operator = {f.name for f in dataclasses.fields(OperatorOptions)}
    out = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _numeric_keys(value, f"{prefix}{f.name}.")
            continue
        if prefix == "carrot." and f.name in operator:
            continue  # checked by OperatorOptions
        args = set(typing.get_args(hints[f.name])) | {hints[f.name]}
        args |= {a for t in list(args) for a in typing.get_args(t)}
        if args & {int, float}:
            out.append(f"{prefix}{f.name}")
    return out


def test_the_range_table_covers_every_numeric_setting() -> None:
    from carrot.train.config import RANGES

    keys = _numeric_keys(Config())
    assert "train.lr" in keys and "data.mean" in keys and "train.layer_decay" in keys
    missing = sorted(set(keys) - set(RANGES))
    assert not missing, f"numeric settings without a range in RANGES: {missing}"
    assert not set(RANGES) - set(keys), "RANGES names keys that are not numeric settings"


def test_yaml_aliases_are_refused_quickly(tmp_path: Path) -> None:
    import time

    rows = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(rows) + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"found the alias \*a; carrot configs do not accept"):
        load_config(path)
    assert time.perf_counter() - start < 5


def test_renamed_keys_say_what_replaced_them() -> None:
    with pytest.raises(ConfigError, match="data.augment was renamed: use data.train_transform"):
        apply_overrides(Config(), ["data.augment=fgvc"])
    with pytest.raises(ConfigError, match=r"data.resize was renamed: use data.crop_pct"):
        apply_overrides(Config(), ["data.resize=550"])


def test_list_settings_from_yaml_and_overrides(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), ["data.mean=[0.5, 0.25, 0.125]", "data.std=[1, 1, 1]"])
    assert cfg.data.mean == [0.5, 0.25, 0.125] and cfg.data.std == [1.0, 1.0, 1.0]
    assert all(type(v) is float for v in cfg.data.std)
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  mean: [0.1, 0.2, 0.3]\n  interpolation: bicubic\n")
    cfg = load_config(path)
    assert cfg.data.mean == [0.1, 0.2, 0.3] and cfg.data.interpolation == "bicubic"
