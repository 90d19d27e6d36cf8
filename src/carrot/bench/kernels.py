"""How many kernels one CARROT step launches, next to CE alone: a cost any machine can measure.

On a GPU a CARROT step is launch-bound (dozens of tiny kernels), so the count of launches, not
the FLOPs, is what it costs. Eager mode runs one kernel per non-view aten op; we count those with
a dispatch mode. Compiled (``torch.compile``, Inductor), we count the calls in the generated
code: fused kernels (C++ on a CPU, Triton on a GPU) and the library kernels they call (matrix
products, sort, top-k). Both counts cover forward and backward of the loss on given embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["KernelCount", "count_compiled_kernels", "count_eager_ops", "kernel_counts"]

_NO_KERNEL = {torch.ops.aten.detach, torch.ops.aten.lift_fresh}
# A call of a generated or library kernel inside Inductor's ``call()``.
_CALL = re.compile(
    r"^\s+(?:[\w, ]+=\s*)?((?:cpp_fused|triton)_\w+|extern_kernels\.\w+|aten\.\w+|torch\.ops\.\w+\.\w+)",
    re.M,
)


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not func.is_view and func.overloadpacket not in _NO_KERNEL:
            self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def count_eager_ops(step: Callable[[Tensor], Tensor], z: Tensor) -> list[str]:
    """The non-view aten ops of ``step(z).backward()`` (after one warm-up call)."""
    for _ in range(2):
        x = z.detach().clone().requires_grad_(True)
        with _CountOps() as counter:
            step(x).backward()
    return counter.ops


def count_compiled_kernels(step: Callable[[Tensor], Tensor], z: Tensor) -> list[str]:
    """Kernel calls in the code Inductor generates for ``step`` (fullgraph), forward + backward."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)  # static: history-free counts
    x = z.detach().clone().requires_grad_(True)
    _, codes = run_and_get_code(lambda: compiled(x).backward())
    calls: list[str] = []
    for code in codes:
        calls += _CALL.findall(code[code.find("def call(") :])
    return calls


@dataclass
class KernelCount:
    step: str
    eager_ops: int
    compiled_kernels: int | None


def _steps(
    batch: int, dim: int, classes: int, k: int, device: str
) -> dict[str, Callable[[Tensor], Tensor]]:
    from carrot.bench.speed import straightforward_operator
    from carrot.functional import OperatorOptions, carrot_ce_kl_loss
    from carrot.train.model import CosineClassifier

    torch.manual_seed(0)
    head = CosineClassifier(dim, classes, scale=16.0, learn_scale=False).to(device)
    y = torch.arange(batch // k, device=device).repeat_interleave(k)

    def ce(z: Tensor) -> Tensor:
        return F.cross_entropy(head(F.normalize(z, dim=1)), y)

    def guide(z: Tensor) -> Tensor:  # the design guide's code, identity encoder
        z_hat = F.normalize(z, dim=1)
        z_plus = F.normalize(straightforward_operator(z_hat, y, detach_stats=True), dim=1)
        logits, logits_plus = head(z_hat), head(z_plus)
        kl = F.kl_div(F.log_softmax(logits, 1), F.softmax(logits_plus, 1), reduction="batchmean")
        return F.cross_entropy(logits, y) + kl

    def carrot(options: Any) -> Callable[[Tensor], Tensor]:
        return lambda z: carrot_ce_kl_loss(z, y, head, options=options)[0]

    return {
        "CE alone": ce,
        "guide's code": guide,
        "carrot (torch.unique)": carrot(OperatorOptions()),
        "carrot, sync_free": carrot(OperatorOptions(sync_free=True)),
    }


def kernel_counts(
    *,
    batch: int = 64,
    dim: int = 512,
    classes: int = 200,
    k: int = 4,
    device: str = "cpu",
    compiled: bool = True,
) -> list[KernelCount]:
    """Eager aten ops and compiled kernels per step for CE alone, the guide's code and carrot.

    Only the sync-free paths compile into one graph (``torch.unique`` sizes its output from the
    data), so only CE and carrot with ``sync_free`` get a compiled count.
    """
    z = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0)).to(device)
    out = []
    # Deterministic algorithms (the trainer's CPU default) change what Inductor generates: count
    # the default, as a GPU run has it, and leave the setting as it was.
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        for name, step in _steps(batch, dim, classes, k, device).items():
            n_compiled = None
            if compiled and name in ("CE alone", "carrot, sync_free"):
                n_compiled = len(count_compiled_kernels(step, z))
            out.append(KernelCount(name, len(count_eager_ops(step, z)), n_compiled))
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    return out
