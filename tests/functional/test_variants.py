"""The operator's options beyond the guide: expansion on the sphere and the class memory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot import OperatorOptions, carrot_operator
from carrot.functional.geometry import chord_to_angle, log_map
from carrot.memory import ClassMemory

from oracle import oracle_angular


def _batch(p: int = 6, k: int = 4, d: int = 10, spread: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(p, d, generator=g, dtype=torch.float64), dim=1)
    y = torch.arange(p).repeat_interleave(k)
    z = F.normalize(
        centers[y] + spread * torch.randn(p * k, d, generator=g, dtype=torch.float64), dim=1
    )
    return z, y


@pytest.mark.parametrize("spread", [0.02, 0.3, 1.0])
def test_angular_matches_float64_oracle(spread: float) -> None:
    z, y = _batch(spread=spread)
    want, ref = oracle_angular(z, y)
    got, stats = carrot_operator(z, y, options=OperatorOptions(space="angular"))
    assert_close(stats["r"], ref["r"], rtol=1e-9, atol=1e-12)
    assert_close(stats["m"], ref["m"], rtol=1e-9, atol=1e-12)
    assert_close(stats["gamma"], ref["gamma"], rtol=1e-9, atol=1e-12)
    assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_angular_expansion_scales_the_angle_to_the_mean_direction() -> None:
    z, y = _batch(spread=0.02)
    out, stats = carrot_operator(z, y, options=OperatorOptions(space="angular"))
    _, ref = oracle_angular(z, y)
    assert (stats["gamma"] > 1.5).all()
    u = ref["u"][y]
    before = torch.atan2(
        torch.linalg.vector_norm(z - (z * u).sum(1, keepdim=True) * u, dim=1), (z * u).sum(1)
    )
    after = torch.atan2(
        torch.linalg.vector_norm(out - (out * u).sum(1, keepdim=True) * u, dim=1), (out * u).sum(1)
    )
    assert_close(after, (stats["gamma"][y] * before).clamp(max=math.pi), rtol=1e-9, atol=1e-12)
    assert_close(out.norm(dim=1), torch.ones(len(y), dtype=torch.float64))


def test_angular_keeps_gamma_one_rows_and_single_class() -> None:
    z, y = _batch(spread=2.0)  # classes overlap: γ = 1 for most
    out, stats = carrot_operator(z, y, options=OperatorOptions(space="angular"))
    same = stats["gamma"][y] == 1
    assert same.any() and torch.equal(out[same], z[same])
    one, st = carrot_operator(z, torch.zeros_like(y), options=OperatorOptions(space="angular"))
    assert one is z and st["skipped"] is True


def test_angular_half_precision_and_gradients() -> None:
    z, y = _batch(spread=0.05)
    out, _ = carrot_operator(z.half(), y, options=OperatorOptions(space="angular"))
    ref, _ = carrot_operator(z.half().float(), y, options=OperatorOptions(space="angular"))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert_close(out.float(), ref, rtol=0, atol=2e-3)  # fp16 rounding of the output only
    x = z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: carrot_operator(
            t, y, detach_stats=False, options=OperatorOptions(space="angular")
        )[0],
        (x,),
    )
    # Detached statistics: the gradient of the oracle with u and γ held fixed.
    w = torch.randn_like(z)
    xa = z.clone().requires_grad_(True)
    (carrot_operator(xa, y, options=OperatorOptions(space="angular"))[0] * w).sum().backward()
    _, ref = oracle_angular(z, y)
    xb = z.clone().requires_grad_(True)
    zb = F.normalize(xb, dim=1)
    u, g = ref["u"][y], ref["gamma"][y]
    v, theta = log_map(zb, u)
    phi = (g * theta).clamp(max=math.pi)
    rows = torch.cos(phi)[:, None] * u + torch.sin(phi)[:, None] * v / theta[:, None]
    (rows * w).sum().backward()
    assert_close(xa.grad, xb.grad, rtol=1e-8, atol=1e-10)


def test_chord_to_angle_and_log_map() -> None:
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[math.cos(1e-4), math.sin(1e-4)]], dtype=torch.float64)
    _, theta = log_map(b, a)
    assert_close(theta, torch.tensor([1e-4], dtype=torch.float64), rtol=1e-12, atol=0)
    assert_close(chord_to_angle((a - b).norm(dim=1)), theta, rtol=1e-9, atol=0)
    assert torch.isinf(chord_to_angle(torch.tensor([math.inf])))


# --- class memory -----------------------------------------------------------------------------


def test_memory_nearest_is_the_brute_force_nearest_other_class() -> None:
    g = torch.Generator().manual_seed(3)
    mem = ClassMemory(12, 5, momentum=0.0)
    centers = torch.randn(12, 5, generator=g, dtype=torch.float32)
    mem.update(centers, torch.ones(12), torch.arange(12), torch.ones(12, dtype=torch.bool))
    query = torch.randn(4, 5, generator=g)
    classes = torch.tensor([0, 3, 7, 11])
    want = torch.stack([
        min((query[i] - centers[j]).norm() for j in range(12) if j != int(classes[i])) for i in range(4)
    ])  # fmt: skip
    assert_close(mem.nearest(query, classes), want)


def test_memory_unseen_classes_do_not_count() -> None:
    mem = ClassMemory(5, 3)
    assert torch.isinf(mem.nearest(torch.randn(2, 3), torch.tensor([0, 1]))).all()
    mem.update(torch.ones(1, 3), torch.ones(1), torch.tensor([2]), torch.ones(1, dtype=torch.bool))
    d = mem.nearest(torch.zeros(2, 3), torch.tensor([0, 2]))
    assert_close(d[0], torch.tensor(math.sqrt(3.0)))
    assert torch.isinf(d[1])  # its only remembered class is itself


def test_memory_update_is_an_ema_and_ignores_unused_slots() -> None:
    mem = ClassMemory(4, 2, momentum=0.75)
    valid = torch.tensor([True, True, False])
    mem.update(
        torch.tensor([[1.0, 0], [0, 1.0], [9.0, 9.0]]),
        torch.tensor([1.0, 2.0, 9.0]),
        torch.tensor([0, 3, 3]),
        valid,
    )
    mem.update(
        torch.tensor([[3.0, 0], [0, 5.0], [9.0, 9.0]]),
        torch.tensor([3.0, 6.0, 9.0]),
        torch.tensor([0, 3, 3]),
        valid,
    )
    assert_close(mem.centers[0], torch.tensor([1.5, 0.0]))
    assert_close(mem.centers[3], torch.tensor([0.0, 2.0]))
    assert_close(mem.radii[:4], torch.tensor([1.5, 0.0, 0.0, 3.0]))
    assert mem.seen[:4].tolist() == [True, False, False, True]


def test_operator_with_memory_uses_the_nearest_remembered_class() -> None:
    z, y = _batch(p=4, spread=0.05)
    mem = ClassMemory(10, z.shape[1], momentum=0.0)
    # Remember a class 9 right next to class 0's centroid: class 0's margin must shrink.
    _, first = carrot_operator(z, y)
    decoy = z[:4].mean(0, keepdim=True) + 1e-3
    mem.update(decoy.float(), torch.ones(1), torch.tensor([9]), torch.ones(1, dtype=torch.bool))
    _, stats = carrot_operator(z, y, memory=mem)
    assert stats["m"][0] < 0.01 < first["m"][0]
    assert stats["gamma"][0] < first["gamma"][0]
    # The decoy sits 1e-3 from class 0's centroid, so the others' margins barely move.
    assert (stats["m"][1:] <= first["m"][1:] + 1e-9).all()
    assert_close(stats["m"][1:], first["m"][1:], rtol=0, atol=5e-3)
    assert mem.seen[:4].all()  # the batch was remembered


def test_memory_errors() -> None:
    with pytest.raises(ValueError, match="momentum must be in"):
        ClassMemory(4, 2, momentum=1.0)
    mem = ClassMemory(4, 2)
    with pytest.raises(ValueError, match=r"centers must have shape \(C, 2\)"):
        mem.nearest(torch.zeros(1, 3), torch.tensor([0]))
    with pytest.raises(RuntimeError, match=r"class labels must lie in \[0, 4\)"):
        mem.update(
            torch.zeros(1, 2), torch.zeros(1), torch.tensor([7]), torch.ones(1, dtype=torch.bool)
        )


def test_memory_agrees_between_compact_and_sync_free_paths() -> None:
    z, y = _batch(p=5, spread=0.05)
    mems = [ClassMemory(8, z.shape[1], momentum=0.5) for _ in range(2)]
    for step in range(3):
        zs = z + 0.01 * step
        a, sa = carrot_operator(zs, y, memory=mems[0])
        b, sb = carrot_operator(zs, y, memory=mems[1], options=OperatorOptions(sync_free=True))
        assert_close(a, b, rtol=1e-6, atol=1e-6)
        assert_close(sb["gamma"][sb["valid"]], sa["gamma"], rtol=1e-6, atol=1e-6)
        assert (sb["gamma"][~sb["valid"]] == 1).all() and torch.isinf(sb["m"][~sb["valid"]]).all()
    assert torch.equal(mems[0].centers, mems[1].centers)


def test_memory_never_expands_a_one_class_batch() -> None:
    z, y = _batch(p=4, spread=0.05)
    mem = ClassMemory(6, z.shape[1])
    carrot_operator(z, y, memory=mem)
    one = z[:4]
    for sync_free in (False, True):
        out, stats = carrot_operator(
            one, y[:4], memory=mem, options=OperatorOptions(sync_free=sync_free)
        )
        assert torch.equal(out, one) and (stats["gamma"] == 1).all()


def test_memory_in_angular_space_compares_directions() -> None:
    z, y = _batch(p=4, spread=0.3)
    mem = ClassMemory(6, z.shape[1], momentum=0.0)
    # Remember class 5 as a short (averaged) vector along class 0's direction: as a direction it
    # coincides with class 0, so class 0's angular margin must collapse to ~0.
    u0 = F.normalize(z[:4].mean(0), dim=0)
    mem.update(
        (0.3 * u0)[None].float(), torch.ones(1), torch.tensor([5]), torch.ones(1, dtype=torch.bool)
    )
    _, stats = carrot_operator(z, y, memory=mem, options=OperatorOptions(space="angular"))
    assert stats["m"][0] < 1e-3


def test_memory_is_not_updated_in_eval_mode() -> None:
    z, y = _batch()
    mem = ClassMemory(6, z.shape[1]).eval()
    carrot_operator(z, y, memory=mem)
    assert not mem.seen.any()
