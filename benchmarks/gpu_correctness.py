"""Parts 1 and 2 of the GPU check (see ``benchmarks/gpu.py``): CUDA results against the CPU
float64 ones (``correctness``) and the host synchronizations of the operator, the losses and one
trainer step (``host_syncs``); also the tiny trainer that ``trainer_vs_minimal`` times."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from carrot import OperatorOptions, carrot_operator
from carrot.methods import default_method


def batch(
    p: int, k: int, d: int, *, seed: int, spread: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(p, d, generator=g, dtype=torch.float64), dim=1)
    y = torch.arange(p).repeat_interleave(k)
    z = F.normalize(
        centers[y] + spread * torch.randn(p * k, d, generator=g, dtype=torch.float64), dim=1
    )
    return z, y


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())


def correctness(device: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    z64, y = batch(64, 4, 256, seed=0)
    _, ref_stats = carrot_operator(z64, y)
    for name, dtype in (
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
    ):
        z = z64.to(device=device, dtype=dtype)
        got, stats = carrot_operator(z, y.to(device))
        # The reference on exactly the rounded input, so that only the operator's own error counts.
        want, want_stats = carrot_operator(z.double().cpu(), y)
        out[f"direct_{name}"] = {
            "out_dtype": str(got.dtype),
            "finite": bool(torch.isfinite(got).all()),
            "gamma_rel_err": rel(stats["gamma"], want_stats["gamma"]),
            "m_rel_err": rel(stats["m"], want_stats["m"]),
            "r_rel_err": rel(stats["r"], want_stats["r"]),
            "z_plus_max_abs_err": float((got.double().cpu() - want).abs().max()),
            "gamma_gt1_frac": float((want_stats["gamma"] > 1).double().mean()),
        }
        if name != "float32":
            lin = torch.nn.Linear(256, 256).to(device)
            torch.nn.init.eye_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
            with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=dtype):
                h = lin(z64.float().to(device))
                got, stats = carrot_operator(h, y.to(device))
            want, want_stats = carrot_operator(h.double().cpu(), y)
            out[f"autocast_{name}"] = {
                "input_dtype": str(h.dtype),
                "out_dtype": str(got.dtype),
                "stats_dtype": str(stats["gamma"].dtype),
                "finite": bool(torch.isfinite(got).all()),
                "gamma_rel_err": rel(stats["gamma"], want_stats["gamma"]),
                "z_plus_max_abs_err": float((got.double().cpu() - want).abs().max()),
            }
    # Gradient through the statistics, float32 on the device vs float64 on the CPU.
    # A seeded weighting: the same check on every run (an unseeded draw moved the error 0.0006-0.003).
    w = torch.randn(z64.shape, dtype=z64.dtype, generator=torch.Generator().manual_seed(2))
    za = z64.float().to(device).requires_grad_(True)
    (
        carrot_operator(za, y.to(device), detach_stats=False)[0] * w.float().to(device)
    ).sum().backward()
    zb = z64.clone().requires_grad_(True)
    (carrot_operator(zb, y, detach_stats=False)[0] * w).sum().backward()
    assert za.grad is not None and zb.grad is not None
    out["grad_detach_false_rel_err"] = rel(za.grad, zb.grad)
    # Close centroids (two of 40 classes 1e-3 apart), float32 on the device.
    z40, y40 = batch(40, 4, 128, seed=1, spread=1e-4)
    _, want40 = carrot_operator(z40, y40)
    _, got40 = carrot_operator(z40.float().to(device), y40.to(device))
    out["many_classes_m_rel_err"] = rel(got40["m"], want40["m"])
    # sync_free equals the compact path.
    a, _ = carrot_operator(z64.float().to(device), y.to(device))
    b, _ = carrot_operator(
        z64.float().to(device), y.to(device), options=OperatorOptions(sync_free=True)
    )
    out["sync_free_vs_compact_max_abs"] = float((a - b).abs().max())
    out["reference_gamma_gt1_frac"] = float((ref_stats["gamma"] > 1).double().mean())
    # Angular expansion and the class memory on the device against float64 on the CPU.
    from carrot.memory import ClassMemory

    want, want_stats = carrot_operator(z64, y, options=OperatorOptions(space="angular"))
    got, stats = carrot_operator(
        z64.float().to(device), y.to(device), options=OperatorOptions(space="angular")
    )
    out["angular_gamma_rel_err"] = rel(stats["gamma"], want_stats["gamma"])
    out["angular_z_plus_max_abs_err"] = float((got.double().cpu() - want).abs().max())
    mem_cpu, mem_dev = ClassMemory(64, 256).double(), ClassMemory(64, 256).to(device)
    for seed in (3, 4):
        zs, ys = batch(64, 4, 256, seed=seed)
        _, want_stats = carrot_operator(zs, ys, memory=mem_cpu)
        _, stats = carrot_operator(zs.float().to(device), ys.to(device), memory=mem_dev)
    out["memory_m_rel_err"] = rel(stats["m"], want_stats["m"])
    return out


def _syncs(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``fn()``'s result and where it synchronized with the host (file:line of each sync)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    where = [
        f"{w.filename.split('/src/')[-1]}:{w.lineno}"
        for w in caught
        if "synchroniz" in str(w.message)
    ]
    return result, where


def count_syncs(device: str) -> dict[str, Any]:
    z64, y = batch(64, 4, 512, seed=2)
    z0, y = z64.float().to(device), y.to(device)
    result: dict[str, Any] = {}
    for label, sync_free in (("compact (torch.unique)", False), ("sync_free=True", True)):
        for detach in (True, False):
            options = OperatorOptions(sync_free=sync_free, detach_stats=detach)
            for _ in range(2):  # warm-up: lazy initialisation may sync once
                z = z0.clone().requires_grad_(True)
                out, _ = carrot_operator(z, y, options=options)
                out.backward(torch.ones_like(out))
            torch.cuda.synchronize()
            z = z0.clone().requires_grad_(True)
            grad = torch.ones_like(z0)
            (out, _), fwd = _syncs(partial(carrot_operator, z, y, options=options))
            _, bwd = _syncs(partial(out.backward, grad))
            counts: dict[str, Any] = {}
            for name, where in (("forward", fwd), ("backward", bwd)):
                counts[name] = len(where)
                counts[f"{name}_where"] = where
            result[f"{label}, detach_stats={detach}"] = counts
    from carrot.functional import carrot_ce_kl_loss
    from carrot.memory import ClassMemory

    head = torch.nn.Linear(512, 64).to(device)
    memory = ClassMemory(64, 512).to(device)
    for label, options, mem in (
        ("CE+KL loss, default", OperatorOptions(), None),
        ("CE+KL loss, sync_free + memory", OperatorOptions(sync_free=True), memory),
    ):

        def step(options: OperatorOptions = options, mem: Any = mem) -> None:
            z = z0.clone().requires_grad_(True)
            carrot_ce_kl_loss(z, y, head, options=options, memory=mem)[0].backward()

        for _ in range(2):
            step()
        torch.cuda.synchronize()
        _, where = _syncs(step)
        result[label] = {"forward+backward": len(where), "where": where}
    result["trainer step"] = _trainer_step_syncs(device)
    return result


def _trainer_step_syncs(device: str) -> dict[str, Any]:
    """Host syncs of one trainer step (CARROT, sync-free statistics): the one finiteness check."""
    import tempfile

    carrot = default_method()  # the CARROT method, with its sync-free statistics
    trainer = tiny_trainer(device, carrot, [f"{carrot}.sync_free=true"], tempfile.mkdtemp())
    x = torch.randn(16, 3, 64, 64, device=device)
    y = torch.arange(4, device=device).repeat_interleave(4)

    step = fixed_trainer_step(trainer, x, y)
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    _, where = _syncs(step)
    trainer.rt.teardown()
    return {"syncs": len(where), "where": where}


def fixed_trainer_step(trainer: Any, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One optimizer step of the trainer (one micro-batch), fed fixed tensors."""

    def step() -> None:
        trainer._micro = []
        trainer._micro_step(x, y, 1, True)
        trainer._optimizer_step(0)

    return step


def tiny_trainer(
    device: str,
    method: str,
    extra: list[str],
    out_dir: str,
    *,
    size: int = 64,
    backbone: str = "resnet18",
    batch_size: int = 16,
) -> Any:
    from carrot.train import Trainer, load_config

    cfg = load_config(
        None,
        [
            f"method={method}",
            "data.name=synthetic",
            "data.options.num_superclasses=4",
            "data.options.classes_per_superclass=5",
            "data.options.train_per_class=8",
            "data.options.test_per_class=2",
            f"data.image_size={size}",
            f"model.backbone={backbone}",
            f"train.batch_size={batch_size}",
            "train.k=4",
            "train.amp=bf16",
            f"train.device={device}",
            "train.progress=false",
            "train.retrieval=false",
            "train.tensorboard=false",
            f"output_dir={out_dir}/run",
            *extra,
        ],
    )
    return Trainer(cfg)
