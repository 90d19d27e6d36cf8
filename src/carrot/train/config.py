"""The experiment schema: typed dataclasses, set from YAML and ``key=value`` overrides.

Precedence: dataclass defaults < ``--config FILE`` < command-line ``section.key=value``. Unknown keys
and wrong types are errors that name the key; the resolved config is written to the run folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from carrot.functional.options import OperatorOptions
from carrot.train.validation import RANGES, Range, validate
from carrot.yamlfile import yaml_error

__all__ = [
    "RANGES",
    "CarrotConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "Range",
    "SupConConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "flatten",
    "load_config",
    "save_config",
]

Method = Literal["ce", "label_smoothing", "carrot", "supcon", "supcon_carrot"]
METHODS: tuple[str, ...] = typing.get_args(Method)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what is expected."""


Interpolation = Literal["bilinear", "bicubic", "nearest"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass
class DataConfig:
    name: str = "digits"
    """nabirds, cub, aircraft, cars, dogs, flowers102, imagefolder, digits, fashion_mnist, synthetic."""
    root: str | None = None
    """Dataset folder (official layout). Built-ins need none (fashion_mnist defaults to Debian's)."""
    image_size: int = 32
    """Side of the square training and test crop, in pixels."""
    train_transform: Literal["auto", "fgvc", "rrc", "light", "none"] = "auto"
    """fgvc: resize to a square of side image_size / crop_pct, random crop, flip (PMG, TransFG;
    tested the same way: square resize, center crop); rrc: RandomResizedCrop + flip (timm's
    ImageNet recipe; tested by resizing the short side and center-cropping); light: pad-and-crop
    shifts (small images); none: resize only; auto: fgvc for photographs, light for the built-in
    low-resolution data."""
    random_crop_padding: int = 0
    """Zero padding added around the image before fgvc's random crop (PMG uses 8)."""
    resize_mode: Literal["square", "short_side"] | None = None
    """How fgvc and the test transform resize to image_size / crop_pct before cropping: to a
    square (PMG, TransFG) or the short side (timm); None: square for fgvc, short side for rrc."""
    randaugment: str | None = None
    """timm RandAugment spec applied after the crop, e.g. rand-m9-mstd0.5 (None: off)."""
    random_erasing: float = 0.0
    """Probability of timm's RandomErasing (per-pixel noise) on the normalized image."""
    color_jitter: float = 0.0
    """Brightness, contrast and saturation jitter strength (0: off)."""
    mean: list[float] | None = None
    """Normalization mean per channel. None: resolved at the start of a run (the backbone's
    pretrained config, or the built-in dataset's own statistics for a model trained from scratch)
    and written to the run's config.yaml."""
    std: list[float] | None = None
    """Normalization std per channel; resolved like mean."""
    interpolation: Interpolation | None = None
    """Resize interpolation; None: the backbone's pretrained config (resolved, saved)."""
    crop_pct: float | None = None
    """Test center crop fraction: resize to image_size / crop_pct, crop image_size (also the
    fgvc training resize). None: the backbone's pretrained config (resolved, saved)."""
    num_workers: int = 0
    """DataLoader worker processes per rank."""
    subset_per_class: int | None = None
    """Keep at most this many training images per class (a fixed, seeded subset)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Dataset-specific options, e.g. annotation_level for aircraft, difficulty for synthetic."""


RESOLVED_DATA_KEYS = ("mean", "std", "interpolation", "crop_pct")
"""data keys that a run resolves from the backbone when they are null, and saves resolved."""

RENAMED_KEYS = {
    "data.augment": "data.train_transform (same values: auto, fgvc, light, none; plus rrc)",
    "data.resize": "data.crop_pct = data.image_size / resize (e.g. 448/550 = 0.8145)",
}
"""Keys of earlier versions: naming one is an error that says what replaced it."""


@dataclass
class ModelConfig:
    backbone: str = "carrot_cnn"
    """Any timm model name (carrot registers the small carrot_cnn for the built-in data)."""
    pretrained: bool = False
    """Load pretrained weights: from pretrained_path if set, else timm's (needs them cached offline)."""
    pretrained_path: str | None = None
    """A local weights file (.pth/.safetensors) for the backbone; works without network."""
    embedding_dim: int | None = None
    """Add a linear projection to this size after the backbone's pooled features (None: no projection)."""
    classifier: Literal["cosine", "linear"] = "cosine"
    """cosine: s · cos(ẑ, w_c); linear: W ẑ + b. Both read the L2-normalized embedding ẑ."""
    cosine_scale: float = 16.0
    """Scale s of the cosine classifier (its initial value if learn_scale)."""
    learn_scale: bool = False
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments of timm.create_model, e.g. img_size: 448 for a ViT."""


@dataclass
class CarrotConfig(OperatorOptions):
    """Options of the CARROT losses (see carrot.functional.carrot_ce_kl_loss and docs/stability.md).

    The operator's options (eps, detach_stats, max_gamma, unbiased_radius, global_stats, sync_free,
    space, ignore_index, radius_factor, radius_stat) are inherited from :class:`carrot.OperatorOptions`, their one home. The
    defaults are the recommended configuration: the guide's recipe with γ capped at 1.5.
    ``guide: true`` runs the guide's exact recipe instead."""

    max_gamma: float | None = 1.5
    """Cap on γ. The trainer's default, 1.5, is the recommended configuration (docs/stability.md:
    no significant harm on any suite over 10 paired seeds); null is the guide's uncapped formula."""
    guide: bool = False
    """Run the design guide's exact recipe (GUIDE_CARROT: λ=1, T=1, KL as its code computes, no
    guard): the recipe keys below are set to the guide's values (leave them at their defaults)."""
    lam: float = 1.0
    T: float = 1.0
    kl_direction: Literal["plus_z", "z_plus", "symmetric"] = "plus_z"
    aux_ce_weight: float = 0.0
    stop_grad_plus: bool = False
    lam_warmup: float = 0.0
    """Fraction of training over which λ rises linearly from 0 (0: constant λ)."""
    memory: bool = False
    """m_c from a running memory of every class's centroid, not only the batch's classes."""
    memory_momentum: float = 0.9


IMPLEMENTATION_KEYS = ("sync_free", "global_stats", "ignore_index")
"""carrot keys that change how, not what, is computed: they combine with ``carrot.guide``."""

GUIDE_CARROT = CarrotConfig(
    guide=True, lam=1.0, T=1.0, kl_direction="plus_z", aux_ce_weight=0.0, max_gamma=None,
    stop_grad_plus=False, lam_warmup=0.0, space="euclidean", memory=False, memory_momentum=0.9,
    detach_stats=True, unbiased_radius=False, eps=1e-12,
)  # fmt: skip
"""The design guide's recipe: what ``carrot.guide=true`` runs (any operator option not named here
is at its OperatorOptions default, which is the guide's formula)."""


@dataclass
class SupConConfig:
    temperature: float = 0.1
    gather_global: bool = True
    """Under DDP, contrast against the embeddings of all ranks."""
    probe_weight: float = 1.0
    """Weight of the CE that trains the classifier on detached embeddings (for accuracy)."""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    """Images per batch on each rank: P = batch_size / k classes × k images."""
    k: int = 4
    lr: float = 0.05
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    """Learning rate after warm-up: cosine decay to min_lr over train.epochs, or constant."""
    warmup_epochs: float = 1.0
    min_lr: float = 0.0
    backbone_lr_mult: float = 1.0
    """Learning-rate multiplier of the (pretrained) backbone relative to the head."""
    layer_decay: float | None = None
    """Layer-wise learning-rate decay for ViT-style backbones (timm's param_groups_layer_decay):
    block i of L gets lr × layer_decay^(L - i); None: off."""
    amp: Literal["off", "bf16", "fp16"] = "off"
    accum_steps: int = 1
    """Micro-batches per optimizer step; each micro-batch is a whole P×K batch."""
    device: str = "auto"
    """auto (cuda if available), cpu, cuda, cuda:N. Under torchrun each rank uses its local GPU."""
    channels_last: bool | None = None
    """Channels-last memory format; None: on for convolutional backbones on CUDA."""
    compile: bool | CompileMode = False
    """torch.compile the model and the CARROT step: false, true (mode default) or a mode."""
    grad_clip: float | None = None
    ema_decay: float | None = None
    label_smoothing: float = 0.1
    """Smoothing of method=label_smoothing."""
    mixup: float = 0.0
    cutmix: float = 0.0
    eval_every: int = 1
    eval_batch_size: int | None = None
    """Test-set batch size (None: twice train.batch_size, at least 64)."""
    log_every: int = 20
    checkpoint_every: int = 0
    """Also checkpoint every this many optimizer steps (0: at epoch ends only)."""
    max_steps_per_epoch: int | None = None
    stop_after_steps: int | None = None
    """Save a checkpoint and stop after this many optimizer steps (continue with --resume)."""
    deterministic: bool | None = None
    """Deterministic algorithms (bit-exact reruns); None: true on CPU, false on CUDA, where
    false lets cuDNN pick the fastest kernels (cudnn.benchmark)."""
    progress: bool = True
    """Progress bars on a terminal; log lines every train.log_every steps otherwise."""
    retrieval: bool = True
    """Precision@1 and MAP@R of the L2-normalized test embeddings (k-NN on the device)."""
    collapse_gamma_mean: float = 8.0
    """Collapse monitor: warn when the mean γ of the epoch's batches so far exceeds this,"""
    collapse_gamma_max: float = 100.0
    """... or when the largest γ of the epoch so far exceeds this,"""
    collapse_radius_drop: float = 0.5
    """... or when the mean within-class radius falls below this fraction of its peak."""
    stop_on_collapse: bool = False
    """Stop with a checkpoint instead of only warning."""
    plots: bool = True
    """Write plots/curves.png and plots/geometry.png at the end."""
    tensorboard: bool = True
    """Write TensorBoard events (when tensorboard is installed); false drops it from loggers."""
    loggers: list[Literal["tensorboard", "csv", "mlflow", "wandb"]] = field(
        default_factory=lambda: ["tensorboard"]
    )
    """Trackers besides metrics.jsonl: any of tensorboard, csv, mlflow, wandb (carrot.train.loggers)."""


@dataclass
class Config:
    method: Method = "carrot"
    seed: int = 0
    output_dir: str = "runs/{data.name}-{method}-s{seed}"
    """The run folder; {key} placeholders are filled from the config."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    carrot: CarrotConfig = field(default_factory=CarrotConfig)
    supcon: SupConConfig = field(default_factory=SupConConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def run_dir(self) -> Path:
        """``output_dir`` with its ``{method}``, ``{seed}``, ``{data.name}``... placeholders filled."""
        from carrot.paths import fill_placeholders

        try:
            return Path(fill_placeholders(self.output_dir, flatten(config_to_dict(self))))
        except ValueError as e:
            raise ConfigError(str(e)) from e


# --- typed assignment ---------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is dict:
        return "a mapping"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to ``tp`` where unambiguous (command-line strings), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in options:
                return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}.")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}.")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key} must be a mapping, got {value!r}.")
    if origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp)
            return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        raise ConfigError(f"{key} must be {_type_name(tp)}, e.g. [0.5, 0.5, 0.5], got {value!r}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__}).")


def _fields(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _unknown(key: str, name: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = f"in {key}" if key else "at the top level"
    return ConfigError(
        f"unknown config key {name!r} {where}.{hint} Valid keys {where}: {', '.join(sorted(valid))}."
    )


def _assign(obj: Any, path: list[str], value: Any, prefix: str = "") -> None:
    fields = _fields(obj)
    name = path[0]
    key = f"{prefix}{name}"
    if key in RENAMED_KEYS:
        raise ConfigError(f"{key} was renamed: use {RENAMED_KEYS[key]}.")
    if name not in fields:
        raise _unknown(prefix.rstrip("."), name, list(fields))
    tp = fields[name]
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current):
        if len(path) == 1:
            if not isinstance(value, dict):
                raise ConfigError(f"{key} is a section; set its keys, e.g. {key}.<key>=<value>.")
            for sub, v in value.items():
                _assign(current, [str(sub)], v, key + ".")
            return
        _assign(current, path[1:], value, key + ".")
        return
    if len(path) > 1:
        if typing.get_origin(tp) is dict:
            current = dict(current)
            node = current
            for part in path[1:-1]:
                node = node.setdefault(part, {}) if isinstance(node, dict) else node
            if not isinstance(node, dict):
                raise ConfigError(f"{key}.{'.'.join(path[1:-1])} is a value, not a mapping.")
            node[path[-1]] = value
            setattr(obj, name, current)
            return
        raise ConfigError(f"{key} is not a section; set it with {key}=<value>.")
    setattr(obj, name, _coerce(key, value, tp))


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 scalars: only true/false are booleans (``amp: off`` stays the string
    'off') and ``1e-3`` is a float. Aliases (``*name``) are refused: a few hundred bytes of nested
    aliases expand to gigabytes (a "billion laughs"), and a config never needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"found the alias *{event.anchor}; carrot configs do not accept YAML aliases, "
                "write the values out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_scalar(text: str) -> Any:
    try:
        return _yaml(text)
    except yaml.YAMLError:
        return text


def config_from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """A config from nested mappings (as read from YAML), over ``base`` or the defaults."""
    cfg = base if base is not None else Config()
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}.")
    for name, value in data.items():
        _assign(cfg, [str(name)], value)
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"overrides must look like section.key=value, got {item!r}.")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has no key before '='.")
        _assign(cfg, key.split("."), parse_scalar(text))
    validate(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then the overrides."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist.")
        try:
            data = _yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {yaml_error(e)}.") from e
        try:
            cfg = config_from_dict(data, cfg)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
