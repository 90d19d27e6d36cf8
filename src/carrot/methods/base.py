"""What a training method is, and the registry that maps ``method=NAME`` to one.

A method is a subclass of :class:`Method` registered with :func:`register_method`. Its class
attributes declare everything the trainer, the validation, the plots, the bench and
``carrot methods`` need to know; its instance (built once per run by :func:`build_method`) is an
``nn.Module`` holding the typed, already-validated objects it uses, its learnable parameters
and its buffers (both checkpointed with ``state_dict``; parameters join the optimizer through
:meth:`Method.param_groups`). See docs/methods.md.

Methods come from carrot's own package and from any installed package that declares an entry
point in the group ``carrot.methods`` (:data:`ENTRY_POINT_GROUP`), loaded the first time the
registry is read.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "ENTRY_POINT_GROUP",
    "LossResult",
    "Method",
    "MethodContext",
    "MethodError",
    "Step",
    "load_plugins",
    "register_method",
    "registered",
    "sections",
]


class MethodError(ValueError):
    """``method=`` names no method, or a combination that cannot be defined."""


@dataclass
class LossResult:
    loss: Tensor
    """The objective (0-d, float32)."""
    parts: dict[str, Tensor]
    """Detached 0-d loss terms for logging (logged as ``train_<name>``)."""
    stats: dict[str, Any]
    """CARROT operator statistics of the batch, for logging (may be empty)."""


@dataclass(frozen=True)
class Step:
    """Where training is when the loss is computed."""

    progress: float
    """Fraction of training done, in [0, 1] (for warm-ups)."""
    observe: bool
    """The trainer logs this step: compute logging-only statistics now (else skip them)."""


@dataclass(frozen=True)
class MethodContext:
    """What a method may need to know about the run when it is built."""

    num_classes: int
    """N, the classes of the training set."""
    embedding_dim: int
    """D, the size of the embedding z."""
    settings: Mapping[str, Any]
    """Every section's settings, by section name (already validated)."""


class Method(nn.Module):
    """A training method: subclass, set the class attributes, implement :meth:`loss`.

    Hooks the trainer calls, in order, on every micro-batch:
    :meth:`transform` (images and labels → images and targets), the model's forward, then
    :meth:`loss`. Learnable parameters are ``nn.Parameter`` attributes (see
    :meth:`param_groups`); state is ``register_buffer`` or submodules. Both are saved in the
    checkpoint (``state_dict``) and restored exactly on resume.
    """

    name: ClassVar[str]
    """``method=NAME``."""
    description: ClassVar[str]
    """One line for ``carrot methods`` and the docs."""
    reference: ClassVar[str]
    """The paper: authors, venue, year."""
    label: ClassVar[str | None] = None
    """Its short name in bench tables (default: the name); ``{field}`` placeholders are its
    section's settings as the run had them (see :meth:`label_for`)."""
    baseline: ClassVar[str | None] = "ce"
    """The method the bench compares it with on the same seeds (None: it is a baseline)."""
    settings_type: ClassVar[type | None] = None
    """The dataclass of its config section (defaults, ranges, docs); None: no settings."""
    section: ClassVar[str | None] = None
    """Its config section's name (default: the method's name when it has settings)."""
    uses: ClassVar[tuple[str, ...]] = ()
    """Other methods' sections whose settings it reads (e.g. supcon_carrot reads carrot's)."""
    hard_labels: ClassVar[bool] = True
    """It needs one hard label per image (class statistics, pairs of a class)."""
    min_per_class: ClassVar[int] = 1
    """Images of a class it needs in a batch (2 for per-class statistics or positives):
    ``train.k`` must be at least this."""
    min_classes: ClassVar[int] = 1
    """Classes it needs in a batch (2 for pairs of different classes): the P×K batch's
    P = train.batch_size / train.k must be at least this."""
    mixes_inputs: ClassVar[bool] = False
    """:meth:`transform` mixes images, so the targets are soft (one label per image no more)."""
    addable: ClassVar[bool] = False
    """It adds a term that can go on top of another method: ``method=OTHER+NAME``
    (implement :meth:`term`)."""
    expands: ClassVar[bool] = False
    """Its loss uses the CARROT expansion (the collapse monitor watches it)."""
    logs: ClassVar[tuple[str, ...]] = ()
    """The loss parts it logs (``LossResult.parts`` keys; plotted as training losses)."""
    default: ClassVar[bool] = False
    """The method ``carrot train`` runs when the config names none, and the one the bench
    compares with its baseline when no --methods are given (exactly one method sets it)."""
    rank: ClassVar[int] = 100
    """Where ``carrot methods`` and error messages list it (then by name)."""
    search_space: ClassVar[Mapping[str, Any] | None] = None
    """What ``carrot tune`` searches besides the shared training settings: setting → a
    :mod:`carrot.tune.space` spec (``Float``, ``Int``, ``Choice``); keys are relative to its
    section, or dotted for another's. ``{}``: the shared settings only; None: not declared (a
    test requires every method to declare one)."""

    def __init__(self, context: MethodContext) -> None:
        super().__init__()
        self.context = context

    @classmethod
    def section_name(cls) -> str | None:
        return cls.section or (cls.name if cls.settings_type is not None else None)

    @classmethod
    def label_for(cls, settings: Mapping[str, Any] | None = None) -> str:
        """Its bench label with the settings that ran: ``label`` with each ``{field}`` filled
        from its section in ``settings`` (every section by name, as in a config), else from the
        section's defaults. E.g. ``CE + label smoothing {smoothing:g}``."""
        text = cls.label or cls.name
        section, settings_type = cls.section_name(), cls.settings_type
        if section is None or settings_type is None:
            return text
        values = (settings or {}).get(section) or settings_type()
        return text.format_map(vars(values))

    def settings(self, section: str | None = None) -> Any:
        """The settings of ``section`` (default: this method's own)."""
        return self.context.settings[section or self.section_name() or ""]

    # --- hooks ------------------------------------------------------------------------------

    def transform(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Images and hard labels → images and targets (default: unchanged).

        Args:
            x: Images. Shape: (B, C, H, W).
            y: Integer labels. Shape: (B,).

        Returns:
            ``(x, target)``: target is y, or soft targets (B, N) for a method that mixes.
        """
        return x, y

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        """The objective of one batch.

        Args:
            z: Raw (un-normalized) embeddings. Shape: (B, D).
            logits: The head's logits of ẑ = z / ‖z‖. Shape: (B, N).
            target: What :meth:`transform` returned: labels (B,) or soft targets (B, N).
            head: The classifier (maps (B, D) normalized embeddings to (B, N) logits).
            step: Training progress and whether this step is logged.
        """
        raise NotImplementedError

    def term(
        self, z: Tensor, logits: Tensor, y: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        """The term an addable method adds on top of another (``method=OTHER+NAME``), given the
        targets OTHER's transform returned: hard labels (B,) unless OTHER mixes, which only an
        addable method with ``hard_labels = False`` accepts. Shapes as in :meth:`loss`."""
        raise NotImplementedError(f"{self.name} cannot be added on top of another method.")

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups of its own parameters: ``params``, ``weight_decay`` and
        ``lr_mult`` (the multiplier of ``train.lr``). Default: one group, no weight decay, the
        full learning rate; none without parameters."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": 0.0, "lr_mult": 1.0}] if params else []

    def average_gradients(self) -> None:
        """Under DDP, average the gradients of its parameters over the ranks, as DDP does for
        the model's (the trainer calls it before the optimizer step; they live outside DDP)."""
        for p in self.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(dist.get_world_size())

    def extra_repr(self) -> str:
        return self.name


_REGISTRY: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])

ENTRY_POINT_GROUP = "carrot.methods"
"""The entry-point group of methods from other packages: ``NAME = module`` (a module whose
import registers its methods with :func:`register_method`) or ``NAME = module:Class`` (a
:class:`Method` subclass, registered on load)."""
_PLUGINS_LOADED = False


def register_method(cls: M) -> M:
    """Class decorator: make ``method=cls.name`` available (like timm's ``register_model``)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a method's name must be an identifier, got {name!r}.")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"method {name!r} is already registered by {_REGISTRY[name].__module__}.")
    for attr in ("description", "reference"):
        if not isinstance(getattr(cls, attr, None), str):
            raise ValueError(f"method {name!r} must declare {attr} (a string).")
    settings = cls.settings_type
    if settings is not None and not dataclasses.is_dataclass(settings):
        raise ValueError(f"method {name!r}: settings_type must be a dataclass, got {settings!r}.")
    _REGISTRY[name] = cls
    return cls


def _load_plugin(entry: importlib.metadata.EntryPoint) -> None:
    dist = entry.dist.name if entry.dist is not None else "an unnamed distribution"
    try:
        obj = entry.load()
        if isinstance(obj, type) and issubclass(obj, Method):
            register_method(obj)
    except Exception as e:  # a broken plug-in is named, whatever its error
        reason = " ".join(f"{type(e).__name__}: {e}".split())  # one line
        raise MethodError(
            f"the method plug-in {entry.name!r} = {entry.value!r} of the package {dist!r} "
            f"(entry-point group {ENTRY_POINT_GROUP}) cannot be loaded: {reason}. Fix or "
            f"uninstall {dist}."
        ) from e


def load_plugins() -> None:
    """Import the methods of the installed packages' ``carrot.methods`` entry points, once.

    Raises:
        MethodError: an entry point fails to load or registers a name already taken; the
            message names its package (and the registry retries on its next read).
    """
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True  # before loading: a plug-in that reads the registry must not recurse
    try:
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _load_plugin(entry)
    except BaseException:
        _PLUGINS_LOADED = False
        raise


def registered() -> dict[str, type[Method]]:
    """Every registered method, by name, in listing order (``rank``, then name), the installed
    packages' (:func:`load_plugins`) included."""
    load_plugins()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].rank, kv[0])))


def sections() -> dict[str, type]:
    """Every config section the registered methods declare: name → settings dataclass."""
    load_plugins()
    out: dict[str, type] = {}
    for cls in _REGISTRY.values():  # registration order: the order of the saved sections
        section = cls.section_name()
        if section is not None and cls.settings_type is not None:
            out.setdefault(section, cls.settings_type)
    return out
