"""ClassMemory: one non-finite batch cannot poison it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from carrot import OperatorOptions, carrot_operator
from carrot.memory import ClassMemory


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat_interleave(4)
    z = F.normalize(torch.randn(4, 8, generator=g)[y] + 0.3 * torch.randn(16, 8, generator=g))
    return z, y


def test_a_nan_batch_is_refused_and_counted() -> None:
    mem = ClassMemory(6, 8)
    z, y = _batch()
    carrot_operator(z, y, memory=mem)
    centers = mem.centers.clone()
    bad = _batch(2)[0].clone()
    bad[0, 0] = float("nan")  # a non-finite row is left out of the statistics (issue 22)
    for sync_free in (False, True):
        _, stats = carrot_operator(bad, y, memory=mem, options=OperatorOptions(sync_free=sync_free))
        assert int(stats["memory_skipped"]) == 0 and int(stats["nonfinite"]) == 1
    assert torch.isfinite(mem.centers[:6]).all() and torch.isfinite(mem.radii[:6]).all()
    assert not torch.equal(mem.centers[0], centers[0])  # class 0 updates from its finite rows
    # Non-finite statistics reaching the memory itself are refused and counted.
    mu = mem.centers[:6].clone()
    mu[0, 0] = float("nan")
    skipped = mem.update(mu, mem.radii[:6].clone(), torch.arange(6), torch.ones(6, dtype=torch.bool))
    assert int(skipped) == 1 and int(mem.skipped) == 1
    assert torch.isfinite(mem.centers[:6]).all() and torch.isfinite(mem.radii[:6]).all()
    # The memory keeps working: a good batch afterwards gives finite distances.
    _, stats = carrot_operator(_batch(1)[0], y, memory=mem)
    assert torch.isfinite(stats["m"]).all() and int(stats["memory_skipped"]) == 0


def test_the_count_is_saved_with_the_memory() -> None:
    mem = ClassMemory(3, 2)
    mem.skipped += 4
    other = ClassMemory(3, 2)
    other.load_state_dict(mem.state_dict())
    assert int(other.skipped) == 4


def test_a_state_dict_from_before_the_count_loads() -> None:
    """carrot 0.1 saved the memory without ``skipped`` (state-dict version 1)."""
    mem = ClassMemory(3, 2)
    mem.centers += 1.5
    mem.skipped += 4
    old = mem.state_dict()
    del old["skipped"]
    old._metadata[""]["version"] = 1  # type: ignore[attr-defined]
    other = ClassMemory(3, 2)
    other.load_state_dict(old)  # strict
    assert int(other.skipped) == 0 and torch.equal(other.centers, mem.centers)
    current = mem.state_dict()
    del current["skipped"]  # a version-2 state dict must still have it
    with pytest.raises(RuntimeError, match="skipped"):
        ClassMemory(3, 2).load_state_dict(current)


def test_one_operator_and_one_loss_per_concept_whatever_the_import() -> None:
    """carrot.carrot_operator is carrot.functional's (likewise the losses and the old
    carrot.memory names): a ClassMemory is read then updated, its snapshot only read."""
    import carrot
    import carrot.functional as CF
    import carrot.memory as CM

    for name in ("carrot_operator", "carrot_ce_kl_loss", "carrot_consistency_loss"):
        assert getattr(carrot, name) is getattr(CF, name) is getattr(CM, name)
    assert carrot.carrot_supcon_loss is CF.carrot_supcon_loss is CM.carrot_supcon_loss
    assert carrot.ClassMemory is ClassMemory
    assert carrot.CenterLoss.__module__ == carrot.ISDALoss.__module__ == "carrot.baselines"
    z, y = _batch()
    mem = ClassMemory(6, 8)
    carrot_operator(*_batch(1), memory=mem)  # classes 0-3 remembered
    before = mem.centers.clone()
    read, stats = CF.carrot_operator(z, y, memory=mem.remembered())
    assert torch.equal(mem.centers, before) and "memory_skipped" not in stats
    updated, stats = CF.carrot_operator(z, y, memory=mem)
    assert torch.equal(read, updated) and int(stats["memory_skipped"]) == 0
    assert not torch.equal(mem.centers, before)
    with pytest.raises(ValueError, match="memory must be a ClassMemory, a Remembered"):
        carrot_operator(z, y, memory=before)  # type: ignore[arg-type]
