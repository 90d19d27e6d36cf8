"""carrot.train.data: preprocessing (from the backbone, then the dataset) and the transforms built from it."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from carrot.train.config import Config, apply_overrides
from carrot.train.data import TransformedDataset, build_transforms, resolve_data_config


def _cfg(*overrides: str) -> Config:
    return apply_overrides(Config(), list(overrides))


# --- preprocessing -------------------------------------------------------------------------------


def _traits(**kw) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{"photo": True, "channels": 3, "flip_ok": True, **kw})


def test_preprocessing_comes_from_the_pretrained_backbone_then_the_dataset() -> None:
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    own = _traits(photo=False, mean=(0.3,), std=(0.2,), channels=1)
    cfg = _cfg("model.pretrained=true")
    resolve_data_config(cfg, vit, _traits())
    assert (cfg.data.mean, cfg.data.interpolation, cfg.data.crop_pct) == ([0.5] * 3, "bicubic", 0.9)
    cfg = _cfg()  # from scratch on a built-in: the dataset's own statistics, one channel
    resolve_data_config(cfg, vit, own)
    assert (cfg.data.mean, cfg.data.std) == ([0.3], [0.2])
    cfg = _cfg("model.pretrained=true")  # pretrained: the backbone's, averaged to one channel
    resolve_data_config(cfg, vit, own)
    assert cfg.data.mean == [0.5] and cfg.data.std == [0.5]
    cfg = _cfg("data.crop_pct=0.5", "data.std=[0.1, 0.2, 0.3]")
    resolve_data_config(cfg, vit, _traits())
    assert cfg.data.crop_pct == 0.5 and cfg.data.std == [0.1, 0.2, 0.3]


def _photo(w: int = 90, h: int = 60) -> Image.Image:
    g = torch.Generator().manual_seed(1)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def _resolved(*overrides: str) -> Config:
    cfg = _cfg(
        "data.image_size=32", "data.mean=[0.5, 0.5, 0.5]", "data.std=[0.5, 0.5, 0.5]", *overrides
    )
    cfg.data = dataclasses.replace(
        cfg.data, interpolation="bilinear", crop_pct=cfg.data.crop_pct or 0.8
    )
    return cfg


def test_fgvc_test_transform_is_a_square_resize_and_center_crop() -> None:
    from torchvision.transforms import v2

    img = _photo()
    got = build_transforms(_resolved("data.train_transform=fgvc"), _traits(), train=False)(img)
    want = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((40, 40), antialias=True),
            v2.CenterCrop(32),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )(img)
    assert_close(got, want)
    rrc = build_transforms(_resolved("data.train_transform=rrc"), _traits(), train=False)(img)
    short = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(40, antialias=True),
            v2.CenterCrop(32),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )(img)
    assert_close(rrc, short)


@pytest.mark.parametrize(
    "extra",
    [
        ("data.train_transform=fgvc", "data.random_crop_padding=8"),
        ("data.train_transform=rrc",),
        ("data.randaugment=rand-m9-mstd0.5", "data.random_erasing=0.5", "data.color_jitter=0.4"),
    ],
)
def test_training_transforms_are_seeded_by_their_slot(extra: tuple[str, ...]) -> None:
    cfg = _resolved(*extra)

    class One:
        labels = torch.zeros(1, dtype=torch.long).numpy()

        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int):
            return _photo(), 0

    ds = TransformedDataset(One(), build_transforms(cfg, _traits(), train=True), seed=7)  # type: ignore[arg-type]
    a, b = ds[(0, (0, 1, 2, 3))][0], ds[(0, (0, 1, 2, 3))][0]
    c = ds[(0, (0, 1, 2, 4))][0]
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    import random

    state = random.getstate()
    ds[(0, (9, 9, 9, 9))]
    assert random.getstate() == state  # the global generators are left as they were


def test_converted_0_1_configs_keep_0_1_preprocessing() -> None:
    """carrot 0.1 resized the short side to data.resize (default size / 0.875), cropped, and
    normalized with the dataset's or ImageNet's statistics: a converted run must see the same."""
    from torchvision.transforms import v2

    from carrot.train.checkpoint import _convert_config
    from carrot.train.config import config_from_dict

    old = {"data": {"name": "imagefolder", "image_size": 16, "resize": 20, "augment": "fgvc"}}
    cfg = config_from_dict(_convert_config(old))
    d = cfg.data
    assert (d.train_transform, d.resize_mode, d.interpolation) == ("fgvc", "short_side", "bilinear")
    assert d.mean == [0.485, 0.456, 0.406] and d.crop_pct == pytest.approx(0.8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    img = _photo()
    for train, middle in (
        (False, [v2.Resize(20, antialias=True), v2.CenterCrop(16)]),
        (True, [v2.Resize(20, antialias=True), v2.RandomCrop(16), v2.RandomHorizontalFlip()]),
    ):
        torch.manual_seed(3)
        want = v2.Compose([v2.ToImage(), *middle, *tail])(img)
        torch.manual_seed(3)
        got = build_transforms(cfg, _traits(), train=train)(img)
        assert_close(got, want)
    digits = config_from_dict(_convert_config({"data": {"name": "digits", "image_size": 16}}))
    assert digits.data.mean == [0.5] and digits.data.std == [0.5]


def test_light_and_none_test_like_they_train() -> None:
    from torchvision.transforms import v2

    img = _photo()
    for mode in ("light", "none"):
        got = build_transforms(_resolved(f"data.train_transform={mode}"), _traits(), train=False)(
            img
        )
        want = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((32, 32), antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.5] * 3, [0.5] * 3),
            ]
        )(img)
        assert_close(got, want)
