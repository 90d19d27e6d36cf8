"""Ranges of every numeric setting and the rules that tie settings together.

Kept apart from the schema (:mod:`carrot.train.config`), which calls :func:`validate` after every
change; a test keeps :data:`RANGES` complete.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carrot.train.config import Config

__all__ = ["RANGES", "Range", "validate"]


BATCH_STATISTICS_METHODS = ("carrot", "supcon", "supcon_carrot")
"""Methods whose loss uses statistics across the classes of a batch (CARROT's centroids,
SupCon's negatives): they need k >= 2 images of each of >= 2 classes in every batch."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        from carrot.train.config import ConfigError

        raise ConfigError(message)


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric setting: lo <= x (lo < x if ``open_lo``), likewise hi;
    every bound finite, so inf and nan are refused too."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def contains(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.open_lo else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.open_hi else x > self.hi))

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.open_lo else "[", ")" if self.open_hi else "]"
            return f"in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{'>' if self.open_lo else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.open_hi else '<='} {self.hi:g}"
        return "a finite number"


_POS = Range(0, open_lo=True)
_NONNEG = Range(0)
_ONE_UP = Range(1)
_UNIT = Range(0, 1)
_UNIT_OPEN_HI = Range(0, 1, open_hi=True)
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**63 - 1),
    "data.image_size": Range(8, 8192),
    "data.random_crop_padding": Range(0, 1024),
    "data.random_erasing": _UNIT,
    "data.color_jitter": _UNIT,
    "data.mean": Range(-10, 10),
    "data.std": Range(0, 10, open_lo=True),
    "data.crop_pct": Range(0, 1, open_lo=True),
    "data.num_workers": Range(0, 1024),
    "data.subset_per_class": _ONE_UP,
    "model.cosine_scale": _POS,
    "model.drop_rate": _UNIT_OPEN_HI,
    "model.drop_path_rate": _UNIT_OPEN_HI,
    "model.embedding_dim": _ONE_UP,
    "carrot.lam": _NONNEG,
    "carrot.T": _POS,
    "carrot.aux_ce_weight": _NONNEG,
    "carrot.lam_warmup": _UNIT,
    "carrot.memory_momentum": _UNIT_OPEN_HI,
    "supcon.temperature": _POS,
    "supcon.probe_weight": _NONNEG,
    "train.epochs": _ONE_UP,
    "train.batch_size": _ONE_UP,
    "train.k": _ONE_UP,
    "train.lr": Range(0, 1e3, open_lo=True),
    "train.momentum": _UNIT_OPEN_HI,
    "train.weight_decay": _NONNEG,
    "train.warmup_epochs": _NONNEG,
    "train.min_lr": Range(0, 1e3),
    "train.backbone_lr_mult": _NONNEG,
    "train.layer_decay": Range(0, 1, open_lo=True),
    "train.accum_steps": _ONE_UP,
    "train.grad_clip": _POS,
    "train.ema_decay": Range(0, 1, open_lo=True, open_hi=True),
    "train.label_smoothing": _UNIT_OPEN_HI,
    "train.mixup": Range(0, 0),
    "train.cutmix": Range(0, 0),
    "train.eval_every": _ONE_UP,
    "train.eval_batch_size": _ONE_UP,
    "train.log_every": _ONE_UP,
    "train.checkpoint_every": _NONNEG,
    "train.max_steps_per_epoch": _ONE_UP,
    "train.stop_after_steps": _ONE_UP,
    "train.collapse_gamma_mean": _ONE_UP,
    "train.collapse_gamma_max": _ONE_UP,
    "train.collapse_radius_drop": _UNIT_OPEN_HI,
}
"""Every numeric setting's allowed range (the operator's own options are checked by
:class:`carrot.OperatorOptions`). A test keeps this table complete."""


def _check_ranges(cfg: Config) -> None:
    from carrot.train.config import config_to_dict, flatten

    flat = flatten(config_to_dict(cfg))
    for key, rule in RANGES.items():
        value = flat[key]
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None or isinstance(v, bool):
                continue
            _check(rule.contains(float(v)), f"{key} must be {rule.describe()}, got {value}.")


def validate(cfg: Config) -> None:
    """Ranges of every numeric setting (:data:`RANGES`), then the rules that tie settings together."""
    from carrot.train.config import CarrotConfig, ConfigError

    if cfg.train.mixup > 0 or cfg.train.cutmix > 0:
        raise ConfigError(
            "train.mixup and train.cutmix are not supported: mixed images have soft labels, and CARROT's "
            "per-class statistics (and the P×K batch) need one hard label per image. Set them to 0."
        )
    _check_ranges(cfg)
    t, d = cfg.train, cfg.data
    _check(
        t.batch_size >= t.k and t.batch_size % t.k == 0,
        f"train.batch_size must be a positive multiple of train.k={t.k}, got {t.batch_size}.",
    )
    if cfg.method in BATCH_STATISTICS_METHODS:
        _check(
            t.k >= 2,
            f"train.k must be >= 2 for method={cfg.method}, got {t.k}: with one image per class every class "
            "is a single point (γ = 1, no SupCon positives) and the method does nothing.",
        )
        _check(
            t.batch_size // t.k >= 2,
            f"train.batch_size must hold at least two classes (train.batch_size / train.k >= 2) for "
            f"method={cfg.method}, got batch_size={t.batch_size} with k={t.k}: a batch of one class "
            "has no other class to measure (γ = 1 on every step, no SupCon negatives) and the "
            "method does nothing. Raise train.batch_size or lower train.k.",
        )
    _check(
        t.warmup_epochs <= t.epochs,
        f"train.warmup_epochs must be <= train.epochs={t.epochs}, got {t.warmup_epochs}.",
    )
    _check(t.min_lr <= t.lr, f"train.min_lr must be <= train.lr={t.lr:g}, got {t.min_lr:g}.")
    for key in ("mean", "std"):
        values = getattr(d, key)
        _check(
            values is None or len(values) in (1, 3),
            f"data.{key} must list 1 or 3 values (one per channel), got {values}.",
        )
    _check(
        d.randaugment is None or d.randaugment.startswith("rand"),
        f"data.randaugment must be a timm RandAugment spec such as rand-m9-mstd0.5, got {d.randaugment!r}.",
    )
    c = cfg.carrot
    try:
        c.validate(prefix="carrot.")
    except ValueError as e:
        raise ConfigError(str(e).replace("None", "null")) from e  # YAML's spelling
    if c.guide:
        # Resolve the flag here, so that the saved config shows what runs. A recipe key may be
        # left at its default or set to the guide's value; anything else contradicts the flag.
        from carrot.train.config import GUIDE_CARROT, IMPLEMENTATION_KEYS

        defaults = CarrotConfig()
        recipe = [
            f.name
            for f in dataclasses.fields(CarrotConfig)
            if f.name not in ("guide", *IMPLEMENTATION_KEYS)
        ]
        clash = [
            k
            for k in recipe
            if getattr(c, k) not in (getattr(defaults, k), getattr(GUIDE_CARROT, k))
        ]
        _check(
            not clash,
            "carrot.guide=true runs the guide's exact recipe; drop the other carrot settings "
            f"({', '.join('carrot.' + k for k in clash)}) or set carrot.guide=false.",
        )
        for k in recipe:
            setattr(c, k, getattr(GUIDE_CARROT, k))
