"""carrot.methods.base: what a method's step sees (``Step``) and returns (``LossResult``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from carrot02 import batch, method_of

from carrot.functional import carrot_operator
from carrot.methods import Step


def test_logging_statistics_are_skipped_when_not_observed() -> None:
    _, method = method_of(["method=ce"])
    z, y, head = batch()
    result = method.loss(z, head(F.normalize(z, dim=1)), y, head, step=Step(0.0, observe=False))
    assert result.stats == {}
    observed = method.loss(z, head(F.normalize(z, dim=1)), y, head, step=Step(0.0, observe=True))
    want = carrot_operator(F.normalize(z, dim=1), y)[1]["gamma"]
    assert torch.equal(observed.stats["gamma"], want)
