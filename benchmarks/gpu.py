"""GPU check, for a machine with CUDA (one short run, a few minutes):

1. ``correctness``: CUDA results of ``carrot_operator`` in float32, bfloat16 and float16 (direct
   half inputs and under autocast) against the CPU float64 result; the ``detach_stats=False``
   gradient; sync-free vs compact; angular space; the class memory.
2. ``host_syncs``: host synchronizations of the operator and the losses, counted with
   ``torch.cuda.set_sync_debug_mode``, for the default path (``torch.unique``) and ``sync_free``,
   and of one trainer step (its one finiteness check).
3. ``operator_speed``: operator forward+backward at B = 256, D = 512 (target <= 0.2 ms) and
   B = 1024, D = 2048: eager (compact, sync-free), compiled (sync-free, fullgraph) and CUDA graphs
   (``mode="reduce-overhead"``).
4. ``step_overhead``: the CARROT step's cost over CE on the same model and batch, timm resnet50 at
   224 and 448 px, batch 64 (P=16, K=4), bf16 autocast, channels-last; the loss eager, sync-free,
   compiled and under CUDA graphs (targets <= 1% at 224, <= 0.5% at 448); steps interleaved.
5. ``trainer_vs_minimal``: the trainer's CE step against a minimal hand-written timm loop on the
   same model, batch, AMP and memory format (target: within 5%).

Run: PYTHONPATH=src python benchmarks/gpu_check.py [--out FILE.json] [--only PART ...]
(the script runs :func:`main` of this module). A developer's tool: it lives beside the package,
not in the wheel.
``--dry-run`` runs every part on the CPU at toy sizes (no CUDA graphs), to check the script.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from carrot import OperatorOptions, carrot_operator
from carrot.bench.timing import interleaved_median
from carrot.methods import default_method, get_method


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
    trainer = _tiny_trainer(device, carrot, [f"{carrot}.sync_free=true"], tempfile.mkdtemp())
    x = torch.randn(16, 3, 64, 64, device=device)
    y = torch.arange(4, device=device).repeat_interleave(4)

    step = _trainer_step(trainer, x, y)
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    _, where = _syncs(step)
    trainer.rt.teardown()
    return {"syncs": len(where), "where": where}


def _trainer_step(trainer: Any, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One optimizer step of the trainer (one micro-batch), fed fixed tensors."""

    def step() -> None:
        trainer._micro = []
        trainer._micro_step(x, y, 1, True)
        trainer._optimizer_step(0)

    return step


def _tiny_trainer(
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


def _cuda(device: str) -> bool:
    return device.startswith("cuda")


def _sync(device: str) -> None:
    if _cuda(device):
        torch.cuda.synchronize()


def _median_ms(fns: dict[str, Any], device: str, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each function, calls interleaved round by round; each
    call waits for the device (so the next one starts on an idle one)."""

    def synced(fn: Callable[[], Any]) -> Callable[[], None]:
        def go() -> None:
            fn()
            _sync(device)

        return go

    _sync(device)
    seconds = interleaved_median(
        {k: synced(f) for k, f in fns.items()}, repeats=repeats, warmup=warmup
    )
    return {k: 1e3 * v for k, v in seconds.items()}


def operator_speed(device: str, dry: bool = False) -> dict[str, Any]:
    """Operator forward + backward, eager / compiled / CUDA graphs."""
    shapes = ((64, 32),) if dry else ((256, 512), (1024, 2048))
    return {f"B={b}, D={d}": _operator_case(device, b, d, dry) for b, d in shapes}


def _operator_case(device: str, b: int, d: int, dry: bool) -> dict[str, float]:
    z64, y = batch(b // 4, 4, d, seed=5)
    z0, y = z64.float().to(device), y.to(device)
    w = torch.randn_like(z0)

    def run(options: OperatorOptions) -> Any:
        def fn(z: torch.Tensor) -> torch.Tensor:
            return (carrot_operator(z, y, options=options)[0] * w).sum()

        return fn

    fns: dict[str, Any] = {
        "eager compact": run(OperatorOptions()),
        "eager sync_free": run(OperatorOptions(sync_free=True)),
    }
    torch._dynamo.reset()
    fns["compiled sync_free"] = torch.compile(run(OperatorOptions(sync_free=True)), fullgraph=True)
    if _cuda(device):
        fns["cuda graphs sync_free"] = torch.compile(
            run(OperatorOptions(sync_free=True)), fullgraph=True, mode="reduce-overhead"
        )

    def step(fn: Any) -> Any:
        def go() -> None:
            z = z0.detach().clone().requires_grad_(True)
            fn(z).backward()

        return go

    return _median_ms({k: step(f) for k, f in fns.items()}, device, 5 if dry else 50)


def _resnet_name(dry: bool) -> str:
    return "resnet18" if dry else "resnet50"


def _resnet(device: str, dry: bool) -> Any:
    import timm

    model = timm.create_model(_resnet_name(dry), num_classes=0)
    return model.to(device).to(memory_format=torch.channels_last)


def _timm_step(
    backbone: Any, head: Any, opt: Any, x: torch.Tensor, loss_fn: Callable[..., torch.Tensor]
) -> Callable[[], None]:
    """A hand-written training step: bf16 autocast, the cosine head on the normalized embedding,
    ``loss_fn(z, logits)``, an optimizer step."""

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            z = backbone(x)
            logits = head(F.normalize(z.float(), dim=1))
            loss = loss_fn(z, logits)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def step_overhead(device: str, dry: bool = False) -> dict[str, Any]:
    """CE vs CARROT training steps on one model and batch, per loss-execution variant."""
    torch.backends.cudnn.benchmark = True
    sizes = (64,) if dry else (224, 448)
    return {f"{_resnet_name(dry)} @ {size}": _step_case(device, size, dry) for size in sizes}


def _step_case(device: str, size: int, dry: bool) -> dict[str, Any]:
    from carrot.functional import carrot_ce_kl_loss
    from carrot.train.model import CosineClassifier

    batch_size, classes = (16, 50) if dry else (64, 1000)
    torch.manual_seed(0)
    backbone = _resnet(device, dry)
    head = CosineClassifier(backbone.num_features, classes, scale=16.0, learn_scale=False)
    head = head.to(device)
    opt = torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=1e-3)
    x = torch.randn(batch_size, 3, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch_size // 4, device=device).repeat_interleave(4)

    def ce(z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y)

    def carrot(options: OperatorOptions) -> Any:
        def loss(z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            return carrot_ce_kl_loss(z, y, head, logits=logits, options=options)[0]

        return loss

    losses: dict[str, Any] = {
        "eager: CE": ce,
        "eager: carrot (torch.unique)": carrot(OperatorOptions()),
        "eager: carrot sync_free": carrot(OperatorOptions(sync_free=True)),
    }
    torch._dynamo.reset()
    losses["compiled: CE"] = torch.compile(ce, fullgraph=True)
    losses["compiled: carrot sync_free"] = torch.compile(
        carrot(OperatorOptions(sync_free=True)), fullgraph=True
    )
    if _cuda(device):
        losses["cuda graphs: CE"] = torch.compile(ce, fullgraph=True, mode="reduce-overhead")
        losses["cuda graphs: carrot sync_free"] = torch.compile(
            carrot(OperatorOptions(sync_free=True)), fullgraph=True, mode="reduce-overhead"
        )

    steps = {k: _timm_step(backbone, head, opt, x, f) for k, f in losses.items()}
    ms = _median_ms(steps, device, 3 if dry else 20)
    row: dict[str, Any] = {"ms": ms}
    for mode in ("eager", "compiled", "cuda graphs"):
        base = ms.get(f"{mode}: CE")
        for label, t in ms.items():
            if base is not None and label.startswith(mode) and label != f"{mode}: CE":
                row[f"{label} / CE"] = t / base
    return row


def trainer_vs_minimal(device: str, dry: bool = False) -> dict[str, Any]:
    """The trainer's own CE step (its micro-step and optimizer step, fed fixed tensors) against a
    minimal timm loop with the same model, head, batch, bf16 autocast and channels-last."""
    import tempfile

    from carrot.train.model import CosineClassifier

    size, batch_size = (64, 16) if dry else (224, 64)
    trainer = _tiny_trainer(
        device,
        get_method(default_method()).baseline or default_method(),  # CE
        [],
        tempfile.mkdtemp(),
        size=size,
        backbone=_resnet_name(dry),
        batch_size=batch_size,
    )
    x = torch.randn(batch_size, 3, size, size, device=device)
    y = torch.arange(batch_size // 4, device=device).repeat_interleave(4)
    y = y % trainer.data.num_classes

    trainer_step = _trainer_step(trainer, x, y)
    torch.manual_seed(0)
    backbone = _resnet(device, dry)
    head = CosineClassifier(
        backbone.num_features, trainer.data.num_classes, scale=16.0, learn_scale=False
    ).to(device)
    opt = torch.optim.SGD(
        list(backbone.parameters()) + list(head.parameters()), lr=0.05, momentum=0.9, nesterov=True
    )
    xc = x.contiguous(memory_format=torch.channels_last)

    minimal_step = _timm_step(
        backbone, head, opt, xc, lambda z, logits: F.cross_entropy(logits.float(), y)
    )

    ms = _median_ms(
        {"trainer": trainer_step, "minimal loop": minimal_step}, device, 3 if dry else 20
    )
    trainer.rt.teardown()
    return {"ms": ms, "trainer / minimal": ms["trainer"] / ms["minimal loop"]}


PARTS = ("correctness", "host_syncs", "operator_speed", "step_overhead", "trainer_vs_minimal")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU, toy sizes")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    args = parser.parse_args()
    start = time.perf_counter()
    report: dict[str, Any] = {"torch": torch.__version__}
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check needs CUDA (use --dry-run to check the script on a CPU).")
        report["gpu"] = torch.cuda.get_device_name()
        report["cuda"] = torch.version.cuda
    parts: dict[str, Any] = {
        "correctness": lambda: correctness(device),
        "host_syncs": lambda: count_syncs(device),
        "operator_speed": lambda: operator_speed(device, args.dry_run),
        "step_overhead": lambda: step_overhead(device, args.dry_run),
        "trainer_vs_minimal": lambda: trainer_vs_minimal(device, args.dry_run),
    }
    for name, fn in parts.items():
        if args.only and name not in args.only:
            continue
        if args.dry_run and name == "host_syncs":
            continue  # torch.cuda.set_sync_debug_mode needs CUDA
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # report and go on: the machine time is precious
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        print(
            f"== {name} ({report[f'{name}_seconds']} s)\n{json.dumps(report[name], indent=1)}",
            flush=True,
        )
    report["seconds"] = round(time.perf_counter() - start, 1)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(json.dumps(report, indent=1))
