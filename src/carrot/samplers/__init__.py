"""Batch samplers."""

from carrot.samplers.pk import PKSampler

__all__ = ["PKSampler"]
