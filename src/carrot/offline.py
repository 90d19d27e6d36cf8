"""What a local model folder may name: nothing that makes loading it reach the network or
read a file outside it.

``carrot.load_model(DIR)`` and ``timm.create_model("local-dir:DIR")`` (with :mod:`carrot.hub`)
build the model that DIR's ``config.json`` names. A name such as ``hf-hub:USER/REPO`` (or
``timm/NAME``, ``local-dir:PATH``) would make timm download that repo's config; a timm argument
such as ``checkpoint_path`` would read another file. A file is data, so both are refused.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOADING_KWARGS", "check_local_timm_kwargs", "plain_architecture"]

LOADING_KWARGS = frozenset(
    {"checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"}
)
"""timm.create_model arguments that load weights or configs from somewhere else."""


def plain_architecture(name: Any, key: str) -> str:
    """``name`` if it is a plain model name that timm knows (timm's own, or one carrot
    registers: ``carrot_cnn``, ``carrot_fgvc``), written without a source prefix; else a
    one-line ``ValueError`` naming ``key``."""
    import timm

    import carrot.train.model  # noqa: F401  (registers carrot_cnn with timm)

    plain = isinstance(name, str) and name != "" and not any(c in name for c in ":/\\")
    if not plain or not timm.is_model(name):
        why = (
            "a source prefix or a path"
            if isinstance(name, str) and not plain
            else "not a model timm or carrot registers"
        )
        raise ValueError(
            f"{key} must be a plain model name that timm or carrot registers (e.g. resnet50, "
            f"carrot_cnn; no hf-hub:, timm/ or local-dir: prefix: loading a local folder never "
            f"goes to the network), got {name!r} ({why})."
        )
    return name


def check_local_timm_kwargs(kwargs: Any, key: str) -> None:
    """A one-line ``ValueError`` when ``kwargs`` (a local config's timm arguments) names one of
    :data:`LOADING_KWARGS`."""
    if not isinstance(kwargs, dict):
        return
    bad = sorted(LOADING_KWARGS & set(map(str, kwargs)))
    if bad:
        raise ValueError(
            f"{key} must not set {', '.join(bad)} (they load weights or configs from outside the "
            f"folder), got { ({k: kwargs[k] for k in bad})!r}."
        )
