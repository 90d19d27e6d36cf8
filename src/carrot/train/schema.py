"""The experiment schema: typed dataclasses for the data, model and training settings, and the
methods' own sections (each declared by its method in :mod:`carrot.methods`).

Loading (YAML, ``key=value`` overrides) is :mod:`carrot.train.config`; the rules that tie settings
together are :mod:`carrot.train.validation`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from carrot.methods import default_method, sections
from carrot.settings import Range, setting

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "config_to_dict",
    "default_sections",
    "flatten",
    "resumable_keys",
    "schema_fields",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what is expected."""


_COUNT = Range(1, 65_536)
"""Sizes that allocate: far above real use, far below a machine."""

Interpolation = Literal["bilinear", "bicubic", "nearest"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    """nabirds, cub, aircraft, cars, dogs, flowers102, imagefolder, digits, fashion_mnist, synthetic."""
    root: str | None = setting(None, resumable=True)
    """Dataset folder (official layout). Built-ins need none (fashion_mnist defaults to Debian's)."""
    image_size: int = setting(32, range=Range(8, 8192))
    """Side of the square training and test crop, in pixels."""
    train_transform: Literal["auto", "fgvc", "rrc", "light", "none"] = "auto"
    """fgvc: resize to a square of side image_size / crop_pct, random crop, flip (PMG, TransFG;
    tested the same way: square resize, center crop); rrc: RandomResizedCrop + flip (timm's
    ImageNet recipe; tested by resizing the short side and center-cropping); light: pad-and-crop
    shifts (small images); none: resize only; auto: fgvc for photographs, light for the built-in
    low-resolution data."""
    random_crop_padding: int = setting(0, range=Range(0, 1024))
    """Zero padding added around the image before fgvc's random crop (PMG uses 8)."""
    resize_mode: Literal["square", "short_side"] | None = None
    """How fgvc and the test transform resize to image_size / crop_pct before cropping: to a
    square (PMG, TransFG) or the short side (timm); None: square for fgvc, short side for rrc."""
    randaugment: str | None = None
    """timm RandAugment spec applied after the crop, e.g. rand-m9-mstd0.5 (None: off)."""
    random_erasing: float = setting(0.0, range=Range(0, 1))
    """Probability of timm's RandomErasing (per-pixel noise) on the normalized image."""
    color_jitter: float = setting(0.0, range=Range(0, 1))
    """Brightness, contrast and saturation jitter strength (0: off)."""
    mean: list[float] | None = setting(None, range=Range(-10, 10))
    """Normalization mean per channel. None: resolved at the start of a run (the backbone's
    pretrained config, or the built-in dataset's own statistics for a model trained from scratch)
    and written to the run's config.yaml."""
    std: list[float] | None = setting(None, range=Range(0, 10, open_lo=True))
    """Normalization std per channel; resolved like mean."""
    interpolation: Interpolation | None = None
    """Resize interpolation; None: the backbone's pretrained config (resolved, saved)."""
    crop_pct: float | None = setting(None, range=Range(0, 1, open_lo=True))
    """Test center crop fraction: resize to image_size / crop_pct, crop image_size (also the
    fgvc training resize). None: the backbone's pretrained config (resolved, saved)."""
    num_workers: int = setting(0, range=Range(0, 1024), resumable=True)
    """DataLoader worker processes per rank."""
    subset_per_class: int | None = setting(None, range=Range(1))
    """Keep at most this many training images per class (a fixed, seeded subset), cut after
    the validation split is drawn (the validation images do not depend on it)."""
    val_split: Literal["none", "fraction", "official"] = "none"
    """What chooses best.pt and the "best" row: none (the test set, as before; the table says
    so), fraction (a stratified data.val_fraction of every training class, held out), official
    (the dataset's own validation split: aircraft, flowers102, imagefolder with val/ and test/)."""
    val_fraction: float = setting(0.1, range=Range(0, 1, open_lo=True, open_hi=True))
    """Share of every class held out for validation with val_split=fraction (at least one image
    per class, and one left for training)."""
    val_seed: int = setting(0, range=Range(0, 2**63 - 1))
    """Seed of the validation split's own generator, independent of the run seed: every method
    and seed of a comparison validates on the same images."""
    options: dict[str, Any] = field(default_factory=dict)
    """Dataset-specific options, e.g. annotation_level for aircraft, difficulty for synthetic."""


RESOLVED_DATA_KEYS = ("mean", "std", "interpolation", "crop_pct")
"""data keys that a run resolves from the backbone when they are null, and saves resolved."""

RENAMED_KEYS = {
    "data.augment": "data.train_transform (same values: auto, fgvc, light, none; plus rrc)",
    "data.resize": "data.crop_pct = data.image_size / resize (e.g. 448/550 = 0.8145)",
}
"""Keys of earlier versions: naming one is an error that says what replaced it."""


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "carrot_cnn"
    """Any timm model name (carrot registers the small carrot_cnn for the built-in data)."""
    pretrained: bool = False
    """Load pretrained weights: from pretrained_path if set, else timm's (needs them cached offline)."""
    pretrained_path: str | None = None
    """A local weights file (.pth/.safetensors) for the backbone; works without network."""
    embedding_dim: int | None = setting(None, range=_COUNT)
    """Add a linear projection to this size after the backbone's pooled features (None: no projection)."""
    classifier: Literal["cosine", "linear"] = "cosine"
    """cosine: s · cos(ẑ, w_c); linear: W ẑ + b. Both read the L2-normalized embedding ẑ."""
    cosine_scale: float = setting(16.0, range=Range(0, open_lo=True))
    """Scale s of the cosine classifier (its initial value if learn_scale)."""
    learn_scale: bool = False
    drop_rate: float = setting(0.0, range=Range(0, 1, open_hi=True))
    drop_path_rate: float = setting(0.0, range=Range(0, 1, open_hi=True))
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments of timm.create_model, e.g. img_size: 448 for a ViT."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = setting(10, range=Range(1, 100_000), resumable=True)  # bounded work
    batch_size: int = setting(32, range=_COUNT)
    """Images per batch on each rank: P = batch_size / k classes × k images."""
    k: int = setting(4, range=_COUNT)
    lr: float = setting(0.05, range=Range(0, 1e3, open_lo=True))
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = setting(0.9, range=Range(0, 1, open_hi=True))
    weight_decay: float = setting(5e-4, range=Range(0))
    schedule: Literal["cosine", "constant"] = "cosine"
    """Learning rate after warm-up: cosine decay to min_lr over train.epochs, or constant."""
    warmup_epochs: float = setting(1.0, range=Range(0))
    min_lr: float = setting(0.0, range=Range(0, 1e3))
    backbone_lr_mult: float = setting(1.0, range=Range(0))
    """Learning-rate multiplier of the (pretrained) backbone relative to the head."""
    layer_decay: float | None = setting(None, range=Range(0, 1, open_lo=True))
    """Layer-wise learning-rate decay for ViT-style backbones (timm's param_groups_layer_decay):
    block i of L gets lr × layer_decay^(L - i); None: off."""
    amp: Literal["off", "bf16", "fp16"] = "off"
    accum_steps: int = setting(1, range=_COUNT)
    """Micro-batches per optimizer step; each micro-batch is a whole P×K batch."""
    device: str = setting("auto", resumable=True)
    """auto (cuda if available), cpu, cuda, cuda:N. Under torchrun each rank uses its local GPU."""
    channels_last: bool | None = None
    """Channels-last memory format; None: on for convolutional backbones on CUDA."""
    compile: bool | CompileMode = setting(False, resumable=True)
    """torch.compile the model and the CARROT step: false, true (mode default) or a mode."""
    grad_clip: float | None = setting(None, range=Range(0, open_lo=True))
    ema_decay: float | None = setting(None, range=Range(0, 1, open_lo=True, open_hi=True))
    eval_every: int = setting(1, range=Range(1), resumable=True)
    eval_batch_size: int | None = setting(None, range=_COUNT, resumable=True)
    """Test-set batch size (None: twice train.batch_size, at least 64)."""
    log_every: int = setting(20, range=Range(1), resumable=True)
    checkpoint_every: int = setting(0, range=Range(0), resumable=True)
    """Also checkpoint every this many optimizer steps (0: at epoch ends only)."""
    max_steps_per_epoch: int | None = setting(None, range=Range(1))
    stop_after_steps: int | None = setting(None, range=Range(1), resumable=True)
    """Save a checkpoint and stop after this many optimizer steps (continue with --resume)."""
    deterministic: bool | None = None
    """Deterministic algorithms (bit-exact reruns); None: true on CPU, false on CUDA, where
    false lets cuDNN pick the fastest kernels (cudnn.benchmark)."""
    progress: bool = setting(True, resumable=True)
    """Progress bars on a terminal; log lines every train.log_every steps otherwise."""
    retrieval: bool = True
    """Precision@1 and MAP@R of the L2-normalized test embeddings (k-NN on the device)."""
    collapse_gamma_mean: float = setting(8.0, range=Range(1), resumable=True)
    """Collapse monitor: warn when the mean γ of the epoch's batches so far exceeds this,"""
    collapse_gamma_max: float = setting(100.0, range=Range(1), resumable=True)
    """... or when the largest γ of the epoch so far exceeds this,"""
    collapse_radius_drop: float = setting(0.5, range=Range(0, 1, open_hi=True), resumable=True)
    """... or when the mean within-class radius falls below this fraction of its peak."""
    stop_on_collapse: bool = setting(False, resumable=True)
    """Stop with a checkpoint instead of only warning."""
    plots: bool = setting(True, resumable=True)
    """Write plots/curves.png and plots/geometry.png at the end."""
    tensorboard: bool = setting(True, resumable=True)
    """Write TensorBoard events (when tensorboard is installed); false drops it from loggers."""
    loggers: list[Literal["tensorboard", "csv", "mlflow", "wandb"]] = setting(
        default_factory=lambda: ["tensorboard"], resumable=True
    )
    """Trackers besides metrics.jsonl: any of tensorboard, csv, mlflow, wandb (carrot.train.loggers)."""


def default_sections() -> dict[str, Any]:
    """Every registered method's settings section at its defaults, by section name."""
    return {name: settings() for name, settings in sections().items()}


@dataclass
class Config:
    method: str = field(default_factory=default_method)
    """A registered method (``carrot methods`` lists them) or BASE+ADDED, e.g. ce+carrot."""
    seed: int = setting(0, range=Range(0, 2**63 - 1))
    output_dir: str = "runs/{data.name}-{method}-s{seed}"
    """The run folder; {key} placeholders are filled from the config."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sections: dict[str, Any] = field(default_factory=default_sections)
    """The methods' sections (``carrot``, ``supcon``...), set and saved as top-level sections and
    read as attributes: ``cfg.carrot``."""
    explicit: set[str] = field(default_factory=set, compare=False, repr=False)
    """The dotted keys a file or an override set (not saved): what ``carrot.guide`` leaves alone."""

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def run_dir(self) -> Path:
        """``output_dir`` with its ``{method}``, ``{seed}``, ``{data.name}``... placeholders filled."""
        from carrot.paths import fill_placeholders

        try:
            return Path(fill_placeholders(self.output_dir, flatten(config_to_dict(self))))
        except ValueError as e:
            raise ConfigError(str(e)) from e


SCHEMA_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
"""The schema's own sections (the methods' come from the registry)."""


def schema_fields() -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """Every setting of the schema but the methods' sections, by dotted key: its field (default,
    range, resumability) and its type."""
    out: dict[str, tuple[dataclasses.Field[Any], Any]] = {}
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name in ("sections", "explicit"):
            continue
        section = SCHEMA_SECTIONS.get(f.name)
        if section is None:
            out[f.name] = (f, hints[f.name])
            continue
        inner = typing.get_type_hints(section)
        for g in dataclasses.fields(section):
            out[f"{f.name}.{g.name}"] = (g, inner[g.name])
    return out


def resumable_keys() -> tuple[str, ...]:
    """The keys a resumed run may change (declared on their fields: ``setting(resumable=True)``);
    anything else would make it a different run."""
    return tuple(k for k, (f, _) in schema_fields().items() if f.metadata.get("resumable"))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain mappings: the config as saved (methods' sections at the top level, in the
    order of the schema: method, seed, output_dir, data, model, the sections, train)."""
    if not isinstance(cfg, Config):
        return dataclasses.asdict(cfg)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.name in ("sections", "explicit"):
            continue
        if f.name == "train":
            out.update({k: dataclasses.asdict(v) for k, v in cfg.sections.items()})
        value = getattr(cfg, f.name)
        is_section = dataclasses.is_dataclass(value) and not isinstance(value, type)
        out[f.name] = dataclasses.asdict(value) if is_section else value
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` → ``{"train.lr": 0.1}``; free-form mappings (``data.options``,
    ``model.timm_kwargs``) stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("options", "timm_kwargs"):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
