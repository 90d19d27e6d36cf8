"""The experiment schema: typed dataclasses, set from YAML and ``key=value`` overrides.

Precedence: dataclass defaults < ``--config FILE`` < command-line ``section.key=value``. Unknown keys
and wrong types are errors that name the key; the resolved config is written to the run folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from carrot.functional.options import OperatorOptions

__all__ = [
    "CarrotConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
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


@dataclass
class DataConfig:
    name: str = "digits"
    """nabirds, cub, aircraft, cars, dogs, flowers102, imagefolder, digits, fashion_mnist, synthetic."""
    root: str | None = None
    """Dataset folder (official layout). Built-ins need none (fashion_mnist defaults to Debian's)."""
    image_size: int = 32
    """Side of the square training crop, in pixels."""
    resize: int | None = None
    """fgvc augmentation: resize the short side to this before cropping (None: image_size / 0.875)."""
    augment: Literal["auto", "fgvc", "light", "none"] = "auto"
    """fgvc: resize + random crop + flip; light: pad-and-crop shifts; auto: fgvc for photographs."""
    num_workers: int = 0
    """DataLoader worker processes per rank."""
    subset_per_class: int | None = None
    """Keep at most this many training images per class (a fixed, seeded subset)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Dataset-specific options, e.g. annotation_level for aircraft, difficulty for synthetic."""


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
    space, ignore_index) are inherited from :class:`carrot.OperatorOptions`, their one home. The
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
    amp: Literal["off", "bf16", "fp16"] = "off"
    accum_steps: int = 1
    """Micro-batches per optimizer step; each micro-batch is a whole P×K batch."""
    device: str = "auto"
    """auto (cuda if available), cpu, cuda, cuda:N. Under torchrun each rank uses its local GPU."""
    channels_last: bool = False
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
    deterministic: bool = True
    progress: bool = True
    retrieval: bool = True
    """Precision@1 and MAP@R of the test embeddings (needs pytorch-metric-learning)."""
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
    """Write TensorBoard events (when tensorboard is installed)."""


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
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        try:
            return Path(self.output_dir.format(**fields))
        except (KeyError, AttributeError, IndexError, ValueError) as e:
            raise ConfigError(
                f"output_dir {self.output_dir!r} has a placeholder that is not a config key ({e})."
            ) from e


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
    'off') and ``1e-3`` is a float."""


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


def _parse_scalar(text: str) -> Any:
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
        _assign(cfg, key.split("."), _parse_scalar(text))
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
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        try:
            cfg = config_from_dict(data, cfg)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from e
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Cross-field rules that types alone do not express."""
    t = cfg.train
    _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}.")
    _check(t.k >= 1, f"train.k must be >= 1, got {t.k}.")
    _check(
        t.batch_size >= t.k and t.batch_size % t.k == 0,
        f"train.batch_size must be a positive multiple of train.k={t.k}, got {t.batch_size}.",
    )
    _check(t.lr > 0 and math.isfinite(t.lr), f"train.lr must be a finite number > 0, got {t.lr}.")
    _check(0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}.")
    _check(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}.")
    _check(
        t.checkpoint_every >= 0, f"train.checkpoint_every must be >= 0, got {t.checkpoint_every}."
    )
    if cfg.method in ("carrot", "supcon", "supcon_carrot"):
        _check(
            t.k >= 2,
            f"train.k must be >= 2 for method={cfg.method}, got {t.k}: with one image per class every class "
            "is a single point (γ = 1, no SupCon positives) and the method does nothing.",
        )
    _check(t.accum_steps >= 1, f"train.accum_steps must be >= 1, got {t.accum_steps}.")
    _check(t.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0, got {t.warmup_epochs}.")
    _check(
        0 <= t.label_smoothing < 1,
        f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}.",
    )
    _check(t.eval_every >= 1, f"train.eval_every must be >= 1, got {t.eval_every}.")
    _check(
        t.eval_batch_size is None or t.eval_batch_size >= 1,
        f"train.eval_batch_size must be >= 1 or null, got {t.eval_batch_size}.",
    )
    _check(t.log_every >= 1, f"train.log_every must be >= 1, got {t.log_every}.")
    _check(
        t.grad_clip is None or t.grad_clip > 0,
        f"train.grad_clip must be > 0 or null, got {t.grad_clip}.",
    )
    _check(
        t.ema_decay is None or 0 < t.ema_decay < 1,
        f"train.ema_decay must be in (0, 1) or null, got {t.ema_decay}.",
    )
    _check(
        t.max_steps_per_epoch is None or t.max_steps_per_epoch >= 1,
        f"train.max_steps_per_epoch must be >= 1 or null, got {t.max_steps_per_epoch}.",
    )
    _check(
        t.stop_after_steps is None or t.stop_after_steps >= 1,
        f"train.stop_after_steps must be >= 1 or null, got {t.stop_after_steps}.",
    )
    if t.mixup > 0 or t.cutmix > 0:
        raise ConfigError(
            "train.mixup and train.cutmix are not supported: mixed images have soft labels, and CARROT's "
            "per-class statistics (and the P×K batch) need one hard label per image. Set them to 0."
        )
    _check(cfg.data.image_size >= 8, f"data.image_size must be >= 8, got {cfg.data.image_size}.")
    _check(
        cfg.data.resize is None or cfg.data.resize >= cfg.data.image_size,
        f"data.resize must be >= data.image_size={cfg.data.image_size} or null, got {cfg.data.resize}.",
    )
    _check(cfg.data.num_workers >= 0, f"data.num_workers must be >= 0, got {cfg.data.num_workers}.")
    _check(
        cfg.data.subset_per_class is None or cfg.data.subset_per_class >= 1,
        f"data.subset_per_class must be >= 1 or null, got {cfg.data.subset_per_class}.",
    )
    _check(
        cfg.model.cosine_scale > 0, f"model.cosine_scale must be > 0, got {cfg.model.cosine_scale}."
    )
    _check(
        cfg.model.embedding_dim is None or cfg.model.embedding_dim >= 1,
        f"model.embedding_dim must be >= 1 or null, got {cfg.model.embedding_dim}.",
    )
    c = cfg.carrot
    try:
        c.validate(prefix="carrot.")
    except ValueError as e:
        raise ConfigError(str(e).replace("None", "null")) from e  # YAML's spelling
    _check(c.lam >= 0, f"carrot.lam must be >= 0, got {c.lam}.")
    _check(c.T > 0, f"carrot.T must be > 0, got {c.T}.")
    _check(c.aux_ce_weight >= 0, f"carrot.aux_ce_weight must be >= 0, got {c.aux_ce_weight}.")
    _check(0 <= c.lam_warmup <= 1, f"carrot.lam_warmup must be in [0, 1], got {c.lam_warmup}.")
    _check(
        0 <= c.memory_momentum < 1,
        f"carrot.memory_momentum must be in [0, 1), got {c.memory_momentum}.",
    )
    if c.guide:
        # Resolve the flag here, so that the saved config shows what runs. A recipe key may be
        # left at its default or set to the guide's value; anything else contradicts the flag.
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
    _check(
        cfg.supcon.temperature > 0, f"supcon.temperature must be > 0, got {cfg.supcon.temperature}."
    )
    _check(
        cfg.supcon.probe_weight >= 0,
        f"supcon.probe_weight must be >= 0, got {cfg.supcon.probe_weight}.",
    )
    for key in ("collapse_gamma_mean", "collapse_gamma_max"):
        _check(getattr(t, key) >= 1, f"train.{key} must be >= 1, got {getattr(t, key)}.")
    _check(
        0 <= t.collapse_radius_drop < 1,
        f"train.collapse_radius_drop must be in [0, 1), got {t.collapse_radius_drop}.",
    )
