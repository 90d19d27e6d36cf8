"""GPU check, for a machine with CUDA (finishes in a few minutes):

1. CUDA correctness of ``carrot_operator`` in float32, bfloat16 and float16 (direct half inputs and
   under autocast) against the CPU float64 result, and of the ``detach_stats=False`` gradient.
2. Host synchronizations in the operator's forward and backward, counted with
   ``torch.cuda.set_sync_debug_mode``, for the default path (``torch.unique``) and ``sync_free=True``.
3. Operator forward+backward time against the guide's straightforward formulas on the GPU.
4. The cost of CARROT in a training step: timm resnet50 at 224 px, batch 64 (P=16, K=4), synthetic
   tensors, bf16 autocast, CE vs CARROT CE+KL, steps interleaved; time and peak memory ratios.

Run: PYTHONPATH=src python benchmarks/gpu_check.py [--out FILE.json] [--dry-run]
(--dry-run runs the correctness parts on the CPU, to check the script itself.)
"""

import sys

# Scripts in this folder must not shadow the standard library's `operator` (operator.py here).
sys.path.pop(0)

import argparse
import json
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from carrot import OperatorOptions, carrot_operator


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
    w = torch.randn_like(z64)
    za = z64.float().to(device).requires_grad_(True)
    (
        carrot_operator(za, y.to(device), detach_stats=False)[0] * w.float().to(device)
    ).sum().backward()
    zb = z64.clone().requires_grad_(True)
    (carrot_operator(zb, y, detach_stats=False)[0] * w).sum().backward()
    out["grad_detach_false_rel_err"] = rel(za.grad, zb.grad)
    # Close centroids (two of 40 classes 1e-3 apart), float32 on the device.
    z40, y40 = batch(40, 4, 128, seed=1, spread=1e-4)
    _, want = carrot_operator(z40, y40)
    _, got = carrot_operator(z40.float().to(device), y40.to(device))
    out["many_classes_m_rel_err"] = rel(got["m"], want["m"])
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
            counts: dict[str, Any] = {}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                out, _ = carrot_operator(z, y, options=options)
                torch.cuda.set_sync_debug_mode("default")
                fwd = [w for w in caught if "synchroniz" in str(w.message)]
                caught.clear()
                torch.cuda.set_sync_debug_mode("warn")
                out.backward(grad)
                torch.cuda.set_sync_debug_mode("default")
                bwd = [w for w in caught if "synchroniz" in str(w.message)]
            for name, ws in (("forward", fwd), ("backward", bwd)):
                counts[name] = len(ws)
                counts[f"{name}_where"] = [
                    f"{w.filename.split('/src/')[-1]}:{w.lineno}" for w in ws
                ]
            result[f"{label}, detach_stats={detach}"] = counts
    from carrot.functional import carrot_ce_kl_loss
    from carrot.memory import ClassMemory

    head = torch.nn.Linear(512, 64).to(device)
    memory = ClassMemory(64, 512).to(device)
    for label, kwargs in (
        ("CE+KL loss, default", {}),
        ("CE+KL loss, sync_free + memory", {"sync_free": True, "memory": memory}),
    ):
        for _ in range(2):
            loss, _ = carrot_ce_kl_loss(z0.clone().requires_grad_(True), y, head, **kwargs)
            loss.backward()
        torch.cuda.synchronize()
        z = z0.clone().requires_grad_(True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            loss, _ = carrot_ce_kl_loss(z, y, head, **kwargs)
            loss.backward()
            torch.cuda.set_sync_debug_mode("default")
        ws = [w for w in caught if "synchroniz" in str(w.message)]
        result[label] = {
            "forward+backward": len(ws),
            "where": [f"{w.filename.split('/src/')[-1]}:{w.lineno}" for w in ws],
        }
    return result


def operator_speed(device: str) -> list[dict[str, Any]]:
    from carrot.bench.speed import operator_timings

    return [
        {
            "B": t.batch,
            "D": t.dim,
            "detach": t.detach_stats,
            "guide_ms": 1e3 * t.guide_s,
            "carrot_ms": 1e3 * t.carrot_s,
            "ratio": t.ratio,
        }
        for t in operator_timings(batches=(256, 1024), dims=(512, 2048), repeats=30, device=device)
    ]


def step_cost(device: str) -> dict[str, Any]:
    import timm

    from carrot.functional import carrot_ce_kl_loss
    from carrot.train.model import CosineClassifier

    torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {}
    models = {}
    variants = {
        "ce": {},
        "carrot": {},
        "carrot_sync_free": {"sync_free": True},
        "carrot_max_gamma_1.5": {"max_gamma": 1.5},
    }
    for method in variants:
        torch.manual_seed(0)
        backbone = (
            timm.create_model("resnet50", num_classes=0)
            .to(device)
            .to(memory_format=torch.channels_last)
        )
        head = CosineClassifier(backbone.num_features, 1000, scale=16.0, learn_scale=False).to(
            device
        )
        params = list(backbone.parameters()) + list(head.parameters())
        models[method] = (backbone, head, torch.optim.SGD(params, lr=0.01, momentum=0.9))
    x = torch.randn(64, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.arange(16, device=device).repeat_interleave(4)

    def step(method: str) -> None:
        backbone, head, opt = models[method]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            z = backbone(x)
            logits = head(F.normalize(z.float(), dim=1))
            if method == "ce":
                loss = F.cross_entropy(logits.float(), y)
            else:
                loss, _ = carrot_ce_kl_loss(z, y, head, logits=logits, **variants[method])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for method in models:
        for _ in range(5):
            step(method)
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {m: [] for m in variants}
    for _ in range(20):
        for method in times:
            torch.cuda.synchronize()
            start = time.perf_counter()
            step(method)
            torch.cuda.synchronize()
            times[method].append(time.perf_counter() - start)
    peaks = {}
    for method in times:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(method)
        torch.cuda.synchronize()
        peaks[method] = torch.cuda.max_memory_allocated() / 2**20
    med = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
    for m in variants:
        results[m] = {
            "ms": 1e3 * med[m],
            "time_ratio_vs_ce": med[m] / med["ce"],
            "peak_mib": peaks[m],
            "memory_ratio_vs_ce": peaks[m] / peaks["ce"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--dry-run", action="store_true", help="correctness on the CPU only")
    parser.add_argument("--only", nargs="+", help="run only these parts")
    args = parser.parse_args()
    start = time.perf_counter()
    report: dict[str, Any] = {"torch": torch.__version__}
    if args.dry_run:
        report["correctness"] = correctness("cpu")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check needs CUDA (use --dry-run to check the script on a CPU).")
        report["gpu"] = torch.cuda.get_device_name()
        report["cuda"] = torch.version.cuda
        for name, fn in (
            ("correctness", correctness),
            ("host_syncs", count_syncs),
            ("operator_speed", operator_speed),
            ("train_step", step_cost),
        ):
            if args.only and name not in args.only:
                continue
            t0 = time.perf_counter()
            try:
                report[name] = fn("cuda")
            except Exception as e:  # report and go on: the machine time is precious
                report[name] = {"error": f"{type(e).__name__}: {e}"}
            report[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
            print(
                f"== {name} ({report[f'{name}_seconds']} s)\n{json.dumps(report[name], indent=1)}",
                flush=True,
            )
    report["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=1)
    if args.dry_run:
        print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
