"""Test-time augmentation for ``carrot eval --tta`` and ``carrot predict --tta``.

``flip``: the model sees each image and its horizontal mirror; the logits are the mean of the two
views' logits, and the embedding the mean of the two raw embeddings (the retrieval metrics
L2-normalize it afterwards).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from carrot.train.model import ModelOutput

__all__ = ["TTA_MODES", "FlipTTA", "with_tta"]

TTA_MODES = ("none", "flip")


class FlipTTA(nn.Module):
    """A model whose output is the mean of its outputs on ``x`` and on ``x`` mirrored left-right.

    Shape:
        x: (B, C, H, W); logits (B, N) and embedding (B, D), as the wrapped model's.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def head(self) -> nn.Module:
        return self.model.head  # type: ignore[return-value]

    def forward(self, x: Tensor) -> ModelOutput:
        both = self.model(torch.cat([x, torch.flip(x, dims=[-1])]))  # (2B, ...)
        b = x.shape[0]
        logits = (both.logits[:b].float() + both.logits[b:].float()) / 2
        embedding = (both.embedding[:b].float() + both.embedding[b:].float()) / 2
        return ModelOutput(logits.to(both.logits.dtype), embedding.to(both.embedding.dtype))


def with_tta(model: nn.Module, tta: str, *, traits: Any = None, dataset: str = "") -> nn.Module:
    """``model`` with test-time augmentation ``tta`` (one of :data:`TTA_MODES`).

    ``traits``: the training dataset's traits; for a dataset whose images are never mirrored in
    training (``flip_ok`` false, e.g. digits: a mirrored digit is another glyph) ``flip`` warns.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"--tta must be one of {', '.join(TTA_MODES)}, got {tta!r}.")
    if tta == "none":
        return model
    if traits is not None and not getattr(traits, "flip_ok", True):
        warnings.warn(
            f"--tta flip on {dataset or 'this dataset'}, whose images are never mirrored in "
            "training (a mirrored image may be another class): expect lower accuracy.",
            stacklevel=2,
        )
    return FlipTTA(model).eval()
