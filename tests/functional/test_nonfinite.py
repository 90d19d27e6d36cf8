"""The non-finite contract of carrot_operator (issue 22, item 4): a row holding NaN or inf is
left out of the statistics like an ignored label, comes back unchanged and is counted in the
stats, on the default and the sync-free path alike; the other rows get exactly what the
operator gives the batch without it (checked against the float64 oracle)."""

from __future__ import annotations

import math

import pytest
import torch

from carrot import carrot_operator
from carrot.functional.operator import summarize_stats
from carrot.functional.options import OperatorOptions

from oracle import oracle_operator

BAD = (float("nan"), float("inf"), -float("inf"))


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    z = torch.randn(12, 5, generator=g) * 0.3 + 2.0 * torch.randn(4, 5, generator=g)[y]
    return z, y


@pytest.mark.parametrize("sync_free", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, None])
@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("rows", [[4], [0, 7], [9, 10]])
def test_non_finite_rows_are_left_out_and_returned_unchanged(
    sync_free: bool, ignore_index: int | None, bad: float, rows: list[int]
) -> None:
    z, y = _batch()
    z_bad = z.clone()
    for i in rows:
        z_bad[i, i % 5] = bad
    opts = OperatorOptions(sync_free=sync_free, ignore_index=ignore_index)
    out, stats = carrot_operator(z_bad, y, options=opts)
    keep = torch.tensor([i not in rows for i in range(12)])
    expected = oracle_operator(z[keep], y[keep])[0]
    torch.testing.assert_close(out[keep].double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[~keep], z_bad[~keep], equal_nan=True)
    assert int(stats["nonfinite"]) == len(rows)
    gamma = stats["gamma"][stats["valid"]]
    assert torch.isfinite(gamma).all() and (gamma >= 1).all()
    summary = summarize_stats(stats, sync=True)
    assert all(math.isfinite(v) for v in summary.values())
    assert summary["classes_in_batch"] == len(set(y[keep].tolist()))


@pytest.mark.parametrize("sync_free", [False, True])
def test_both_paths_agree_and_finite_batches_are_untouched(sync_free: bool) -> None:
    z, y = _batch(1)
    plain, stats = carrot_operator(z, y, options=OperatorOptions(sync_free=sync_free))
    assert int(stats["nonfinite"]) == 0
    torch.testing.assert_close(plain.double(), oracle_operator(z, y)[0], rtol=1e-5, atol=1e-5)
    z[3, 0] = float("nan")
    a, _ = carrot_operator(z, y, options=OperatorOptions(sync_free=False))
    b, _ = carrot_operator(z, y, options=OperatorOptions(sync_free=True))
    torch.testing.assert_close(a, b, equal_nan=True)


def test_angular_space_and_gradients_of_finite_rows() -> None:
    z, y = _batch(2)
    z[5] = float("nan")
    z = z.requires_grad_()
    out, _ = carrot_operator(z, y, options=OperatorOptions(space="angular"))
    assert torch.isnan(out[5]).all() and torch.isfinite(out[torch.arange(12) != 5]).all()
    out[torch.arange(12) != 5].sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad[torch.arange(12) != 5]).all()
    free, _ = carrot_operator(z.detach(), y, options=OperatorOptions(detach_stats=False))
    assert torch.isfinite(free[torch.arange(12) != 5]).all()


def test_a_class_whose_rows_are_all_non_finite_drops_out() -> None:
    z, y = _batch(3)
    z[y == 2] = float("inf")
    out, stats = carrot_operator(z, y)
    assert int(stats["nonfinite"]) == 3 and stats["classes_in_batch"] == 3
    assert 2 not in stats["classes"][stats["valid"]].tolist()
    keep = y != 2
    torch.testing.assert_close(
        out[keep].double(), oracle_operator(z[keep], y[keep])[0], rtol=1e-5, atol=1e-5
    )
    one_left = z.clone()
    one_left[y != 0] = float("nan")  # one finite class: fewer than two, returned unchanged
    same, stats = carrot_operator(one_left, y)
    assert stats["skipped"] and same is one_left


def test_fp16_input_keeps_its_dtype() -> None:
    z, y = _batch(4)
    z = z.half()
    z[1, 1] = float("nan")
    out, stats = carrot_operator(z, y)
    assert out.dtype == torch.float16 and int(stats["nonfinite"]) == 1
    assert torch.isfinite(out[torch.arange(12) != 1]).all()


def test_a_pairwise_matrix_too_large_for_memory_names_its_dimensions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As with 100,000 classes in one batch: the allocator's failure becomes one line naming C."""
    import carrot.functional.geometry as geometry
    import carrot.functional.nearest as nearest

    def no_memory(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: not enough memory: "
            "you tried to allocate 40000000000 bytes."
        )

    z, y = _batch()
    monkeypatch.setattr(nearest, "_DIRECT_PAIRS", 0)  # the Gram-matrix search of many classes
    monkeypatch.setattr(geometry.torch, "addmm", no_memory)
    with pytest.raises(ValueError, match=r"C classes in the batch × R.* of 4 × 4 .*fewer classes"):
        carrot_operator(z, y)
    monkeypatch.undo()
    real_eq = torch.Tensor.__eq__
    calls = {"n": 0}

    def eq(a: torch.Tensor, b: object) -> torch.Tensor:
        if isinstance(b, torch.Tensor) and a.ndim == 2 and a.shape[1] == 1 and b.ndim == 2:
            calls["n"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.31 GiB")
        return real_eq(a, b)

    monkeypatch.setattr(torch.Tensor, "__eq__", eq)
    with pytest.raises(
        ValueError, match=r"label comparison matrix \(B × B\) of 12 × 12 .*sync_free=False"
    ):
        carrot_operator(z, y, options=OperatorOptions(sync_free=True))
    assert calls["n"] == 1


def test_other_runtime_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import carrot.functional.geometry as geometry
    import carrot.functional.nearest as nearest

    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(nearest, "_DIRECT_PAIRS", 0)
    monkeypatch.setattr(geometry.torch, "addmm", broken)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        carrot_operator(*_batch())
