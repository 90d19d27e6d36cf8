"""The trainer's pieces without a run: param groups, retrieval metrics, preprocessing, transforms,
progress lines."""

from __future__ import annotations

import dataclasses
import io
import types

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.testing import assert_close

from carrot.train.config import Config, ConfigError, apply_overrides
from carrot.train.data import TransformedDataset, build_transforms, resolve_data_config
from carrot.train.evaluate import retrieval_metrics
from carrot.train.model import build_model
from carrot.train.optim import param_groups
from carrot.train.progress import Progress


def _cfg(*overrides: str) -> Config:
    return apply_overrides(Config(), list(overrides))


# --- optimizer groups ----------------------------------------------------------------------------


def _group_of(groups: list[dict], param: torch.Tensor) -> dict:
    return next(g for g in groups if any(p is param for p in g["params"]))


def test_no_weight_decay_on_norms_biases_and_the_models_own_list() -> None:
    cfg = _cfg("model.backbone=test_vit", "train.weight_decay=0.05", "train.backbone_lr_mult=0.1")
    model = build_model(cfg.model, num_classes=4, image_size=32)
    groups = param_groups(model, cfg)
    vit = model.backbone
    assert {"pos_embed", "cls_token"} <= set(vit.no_weight_decay())
    for p in (vit.pos_embed, vit.cls_token, vit.norm.weight, vit.blocks[0].attn.qkv.bias):
        assert _group_of(groups, p)["weight_decay"] == 0.0
    assert _group_of(groups, vit.blocks[0].attn.qkv.weight)["weight_decay"] == 0.05
    assert _group_of(groups, vit.blocks[0].attn.qkv.weight)["lr_mult"] == pytest.approx(0.1)
    assert _group_of(groups, model.head.weight)["lr_mult"] == 1.0
    assert _group_of(groups, model.head.weight)["weight_decay"] == 0.05
    assert groups[0]["lr_mult"] == 1.0  # the classifier's groups come first
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_layer_decay_scales_the_lr_of_earlier_blocks() -> None:
    cfg = _cfg("model.backbone=test_vit", "train.layer_decay=0.5", "train.backbone_lr_mult=0.2")
    model = build_model(cfg.model, num_classes=4, image_size=32)
    groups = param_groups(model, cfg)
    vit = model.backbone
    depth = len(vit.blocks)
    first = _group_of(groups, vit.blocks[0].attn.qkv.weight)["lr_mult"]
    last = _group_of(groups, vit.blocks[-1].attn.qkv.weight)["lr_mult"]
    assert last / first == pytest.approx(0.5 ** -(depth - 1))
    assert _group_of(groups, vit.patch_embed.proj.weight)["lr_mult"] < first
    assert _group_of(groups, model.head.weight)["lr_mult"] == 1.0
    with pytest.raises(
        ConfigError, match="train.layer_decay needs a backbone with timm's group_matcher"
    ):
        param_groups(build_model(_cfg().model, num_classes=4), _cfg("train.layer_decay=0.5"))


# --- retrieval metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_elements", [1 << 26, 97])
def test_retrieval_metrics_match_pytorch_metric_learning(max_elements: int) -> None:
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 9, (120,), generator=g)
    labels[0] = 50  # a class seen once: left out, as PML does
    centers = torch.randn(60, 16, generator=g)
    emb = centers[labels] + 1.5 * torch.randn(120, 16, generator=g)
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity(), batch_size=1024),
    )
    want = calc.get_accuracy(F.normalize(emb, dim=1), labels)
    got = retrieval_metrics(emb, labels, max_elements=max_elements)
    assert got["precision_at_1"] == pytest.approx(100 * want["precision_at_1"], abs=1e-4)
    assert got["map_at_r"] == pytest.approx(100 * want["mean_average_precision_at_r"], abs=1e-4)
    assert 0 < got["map_at_r"] < 100


def test_retrieval_metrics_of_perfect_and_degenerate_sets() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    emb = F.one_hot(labels, 3).float() + 0.01 * torch.arange(6.0)[:, None]
    assert retrieval_metrics(emb, labels) == {"precision_at_1": 100.0, "map_at_r": 100.0}
    # undefined (no query has another item of its class): left out, shown n/a, never 0.00
    assert retrieval_metrics(emb[:1], labels[:1]) == {}
    assert retrieval_metrics(emb[::2], labels[::2]) == {}  # every class seen once
    assert retrieval_metrics(emb[1:3], labels[1:3]) == {}  # two images, two classes
    assert retrieval_metrics(emb[:0], labels[:0]) == {}


def test_the_summary_shows_undefined_retrieval_as_n_a() -> None:
    from carrot.train.report import format_summary

    summary = {
        "dataset": "d", "method": "ce", "seed": 0, "epochs": 2, "run_dir": "r",
        "final": {"epoch": 2, "top1": 50.0, "mean_class_acc": 50.0},
        "best": {"epoch": 1, "top1": 60.0, "mean_class_acc": 60.0, "precision_at_1": 40.0},
    }  # fmt: skip
    final = next(line for line in format_summary(summary).splitlines() if "final" in line)
    assert final.split("|")[4].strip() == "n/a" and final.split("|")[2].strip() == "50.00"


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


# --- progress ------------------------------------------------------------------------------------


def test_progress_off_a_terminal_logs_lines_not_carriage_returns() -> None:
    stream = io.StringIO()
    bar = Progress(total=100, desc="epoch 1/3", stream=stream, every=25)
    for _ in range(100):
        bar.update(1)
    bar.set_postfix({"loss": 0.5})
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split()[2] for line in lines] == ["25/100", "50/100", "75/100", "100/100"]
    quiet = io.StringIO()
    Progress(total=10, desc="x", stream=quiet, enabled=False).update(10)
    assert quiet.getvalue() == ""


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


def test_progress_keeps_tqdms_live_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = Progress(total=50, desc="epoch 1/3", stream=stream, every=25)
    for _ in range(50):
        bar.update(1)
    bar.close()
    assert "\r" in stream.getvalue() and "epoch 1/3: 25/50" not in stream.getvalue()
