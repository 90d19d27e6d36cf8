"""Ranges of every numeric setting and the rules that tie settings together.

Kept apart from the schema (:mod:`carrot.train.schema`); the loader (:mod:`carrot.train.config`)
calls :func:`validate` once a config is built. A test keeps :data:`RANGES` complete.
"""

from __future__ import annotations

from carrot.methods import MethodError, get_method
from carrot.settings import Range
from carrot.train.schema import Config, ConfigError, config_to_dict, flatten

__all__ = ["RANGES", "Range", "resolve", "validate"]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


_POS = Range(0, open_lo=True)
_NONNEG = Range(0)
_ONE_UP = Range(1)
_UNIT = Range(0, 1)
_UNIT_OPEN_HI = Range(0, 1, open_hi=True)
_COUNT = Range(1, 65_536)  # sizes that allocate: far above real use, far below a machine
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
    "data.val_fraction": Range(0, 1, open_lo=True, open_hi=True),
    "data.val_seed": Range(0, 2**63 - 1),
    "model.cosine_scale": _POS,
    "model.drop_rate": _UNIT_OPEN_HI,
    "model.drop_path_rate": _UNIT_OPEN_HI,
    "model.embedding_dim": _COUNT,
    "train.epochs": Range(1, 100_000),  # a count is bounded: one value is not unbounded work
    "train.batch_size": _COUNT,
    "train.k": _COUNT,
    "train.lr": Range(0, 1e3, open_lo=True),
    "train.momentum": _UNIT_OPEN_HI,
    "train.weight_decay": _NONNEG,
    "train.warmup_epochs": _NONNEG,
    "train.min_lr": Range(0, 1e3),
    "train.backbone_lr_mult": _NONNEG,
    "train.layer_decay": Range(0, 1, open_lo=True),
    "train.accum_steps": _COUNT,
    "train.grad_clip": _POS,
    "train.ema_decay": Range(0, 1, open_lo=True, open_hi=True),
    "train.eval_every": _ONE_UP,
    "train.eval_batch_size": _COUNT,
    "train.log_every": _ONE_UP,
    "train.checkpoint_every": _NONNEG,
    "train.max_steps_per_epoch": _ONE_UP,
    "train.stop_after_steps": _ONE_UP,
    "train.collapse_gamma_mean": _ONE_UP,
    "train.collapse_gamma_max": _ONE_UP,
    "train.collapse_radius_drop": _UNIT_OPEN_HI,
}
"""Every numeric setting's allowed range, but the methods' sections: each method declares its
settings' ranges on its settings dataclass (see :mod:`carrot.settings`). A test keeps this table
complete."""


def _check_ranges(cfg: Config) -> None:
    flat = flatten(config_to_dict(cfg))
    for key, rule in RANGES.items():
        value = flat[key]
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None or isinstance(v, bool):
                continue
            _check(rule.contains(v), f"{key} must be {rule.describe()}, got {value}.")


def _check_method(cfg: Config) -> None:
    """The method exists, can be defined, and the P×K batch gives it what it needs."""
    try:
        method = get_method(cfg.method)
    except MethodError as e:
        raise ConfigError(str(e)) from e
    t = cfg.train
    _check(
        t.k >= method.min_per_class,
        f"train.k must be >= {method.min_per_class} for method={cfg.method}, got {t.k}: with fewer "
        "images of a class in a batch its per-class statistics (or positives) are undefined and "
        "the method does nothing.",
    )
    n = method.min_classes
    _check(
        t.batch_size // t.k >= n,
        f"train.batch_size must hold at least {'two' if n == 2 else n} classes (train.batch_size "
        f"/ train.k >= {n}) for method={cfg.method}, got batch_size={t.batch_size} with k={t.k}: "
        "a batch of one class has no other class to measure and the method does nothing. Raise "
        "train.batch_size or lower train.k.",
    )
    _check(
        not method.mixes_inputs or t.batch_size % 2 == 0,
        f"train.batch_size must be even for method={cfg.method} (it mixes image i with image "
        f"B-1-i), got {t.batch_size}.",
    )


def _check_val_split(cfg: Config) -> None:
    """``data.val_split=official`` needs a dataset that ships a validation split."""
    from carrot.data import DATASETS, official_val_datasets

    d = cfg.data
    kind = DATASETS.get(d.name)
    _check(
        d.val_split != "official"
        or kind is None
        or getattr(kind, "official_val", None) is not None,
        f"data.val_split=official needs a dataset with its own validation split "
        f"({', '.join(official_val_datasets())}), got data.name={d.name}; use "
        "data.val_split=fraction (a stratified data.val_fraction of every training class).",
    )


def _check_sections(cfg: Config) -> None:
    for name, settings in cfg.sections.items():
        try:
            settings.validate(prefix=f"{name}.")
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e).replace("None", "null")) from e  # YAML's spelling


def resolve(cfg: Config) -> None:
    """Settings that depend on others, in one visible place: each section's ``resolve`` (today
    ``carrot.guide``, see :meth:`carrot.methods.carrot.CarrotSettings.resolve`), given the keys
    the user set explicitly."""
    for name, settings in cfg.sections.items():
        hook = getattr(settings, "resolve", None)
        if hook is None:
            continue
        explicit = {k.removeprefix(f"{name}.") for k in cfg.explicit if k.startswith(f"{name}.")}
        try:
            hook(explicit, prefix=f"{name}.")
        except ValueError as e:
            raise ConfigError(str(e)) from e


def validate(cfg: Config) -> None:
    """Checks every setting once, when the config is built: the ranges (:data:`RANGES` and each
    method section's own), the method and what it needs, the rules that tie settings together;
    then :func:`resolve`."""
    _check_ranges(cfg)
    t, d = cfg.train, cfg.data
    _check(
        t.batch_size >= t.k and t.batch_size % t.k == 0,
        f"train.batch_size must be a positive multiple of train.k={t.k}, got {t.batch_size}.",
    )
    _check_method(cfg)
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
    _check_val_split(cfg)
    _check_sections(cfg)
    resolve(cfg)
