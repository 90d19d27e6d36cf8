"""The checks of a built config: each setting's range (declared on its field, see
:mod:`carrot.settings`) and the rules that tie settings together, in one place.

The loader (:func:`carrot.train.config.build_config`) calls :func:`validate` once, when it
builds a config.
"""

from __future__ import annotations

from carrot.methods import MethodError, get_method
from carrot.settings import Range, check_ranges
from carrot.train.schema import SCHEMA_SECTIONS, Config, ConfigError, schema_fields

__all__ = ["RANGES", "Range", "resolve", "validate"]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


RANGES: dict[str, Range] = {
    key: f.metadata["range"] for key, (f, _) in schema_fields().items() if "range" in f.metadata
}
"""Every numeric setting's range but the methods' sections', by dotted key: read from the
fields (``setting(..., range=...)`` in :mod:`carrot.train.schema`), where they are declared."""


def _check_ranges(cfg: Config) -> None:
    """Each setting within the range declared on its field (:func:`carrot.settings.check_ranges`)."""
    try:
        check_ranges(cfg)
        for name in SCHEMA_SECTIONS:
            check_ranges(getattr(cfg, name), prefix=f"{name}.")
    except ValueError as e:
        raise ConfigError(str(e)) from e


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
    """Each method section: its fields' declared ranges, then its own ``validate`` (if any) for
    the rules that tie its fields together."""
    for name, settings in cfg.sections.items():
        try:
            check_ranges(settings, prefix=f"{name}.")
            hook = getattr(settings, "validate", None)
            if hook is not None:
                hook(prefix=f"{name}.")
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e).replace("None", "null")) from e  # YAML's spelling


def resolve(cfg: Config) -> None:
    """Settings that depend on others, in one visible place: each section's ``resolve`` (today
    ``carrot.guide``, see :meth:`carrot.methods.carrot.CarrotSettings.resolve`), given the keys
    the user set explicitly; it returns the section's resolved settings (a new object)."""
    for name, settings in cfg.sections.items():
        hook = getattr(settings, "resolve", None)
        if hook is None:
            continue
        explicit = {k.removeprefix(f"{name}.") for k in cfg.explicit if k.startswith(f"{name}.")}
        try:
            cfg.sections[name] = hook(explicit, prefix=f"{name}.")
        except ValueError as e:
            raise ConfigError(str(e)) from e


def validate(cfg: Config) -> None:
    """Checks every setting once, when the config is built: the ranges (declared on the fields
    of the schema and of each method's section), the method and what it needs, the rules that tie settings together;
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
