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
(the script runs :func:`main` of this module; parts 1 and 2 are in ``gpu_correctness.py``). A
developer's tool: it lives beside the package, not in the wheel.
``--dry-run`` runs every part on the CPU at toy sizes (no CUDA graphs), to check the script.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from carrot import OperatorOptions, carrot_operator
from carrot.bench.timing import interleaved_median
from carrot.methods import default_method, get_method
from gpu_correctness import batch, correctness, count_syncs, fixed_trainer_step, tiny_trainer


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
    trainer = tiny_trainer(
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

    trainer_step = fixed_trainer_step(trainer, x, y)
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
