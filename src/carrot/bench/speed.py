"""Speed benchmarks of the library pieces: the operator against a straightforward implementation
of the guide's formulas, and PKSampler against pytorch-metric-learning's MPerClassSampler.

Every figure is a ratio of two timings taken in the same run, calls interleaved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from carrot.bench.timing import interleaved_median
from carrot.functional.operator import carrot_operator


def straightforward_operator(
    z: Tensor, y: Tensor, *, detach_stats: bool, eps: float = 1e-12
) -> Tensor:
    """The guide's formulas written the obvious way (unique + index_add_ + cdist); statistics are
    built with autograd on, as in the guide, and detached afterwards when ``detach_stats``. The
    guide's in-place ``fill_diagonal_`` is replaced by an out-of-place mask so that
    ``detach_stats=False`` can be differentiated at all."""
    classes, inv = torch.unique(y, sorted=True, return_inverse=True)
    c = classes.numel()
    counts = torch.bincount(inv, minlength=c).clamp_min(1)
    mu = (
        torch.zeros(c, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, inv, z)
        / counts[:, None]
    )
    diff = z - mu[inv]
    r2 = torch.zeros(c, dtype=z.dtype, device=z.device).index_add(0, inv, (diff * diff).sum(1))
    r = torch.sqrt(r2 / counts + eps)
    dist = torch.cdist(mu, mu) + torch.diag(torch.full((c,), float("inf"), device=z.device))
    m = dist.min(dim=1).values
    gamma = torch.clamp(m / (2 * r + eps), min=1.0)
    if detach_stats:
        mu, gamma = mu.detach(), gamma.detach()
    return mu[inv] + gamma[inv, None] * (z - mu[inv])


@dataclass
class OperatorTiming:
    batch: int
    dim: int
    detach_stats: bool
    guide_s: float
    carrot_s: float

    @property
    def ratio(self) -> float:
        return self.carrot_s / self.guide_s


def operator_timings(
    *,
    batches: tuple[int, ...] = (64, 256, 1024),
    dims: tuple[int, ...] = (128, 512, 2048),
    k: int = 4,
    repeats: int = 20,
    device: str = "cpu",
) -> Iterator[OperatorTiming]:
    """Forward+backward time of both implementations for every (detach, B, D)."""
    sync: Callable[[], None] = (
        torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    )
    gen = torch.Generator().manual_seed(0)
    for detach in (True, False):
        for b in batches:
            for d in dims:
                y = torch.arange(b // k).repeat_interleave(k).to(device)
                z0 = F.normalize(torch.randn(b, d, generator=gen), dim=1).to(device)
                w = torch.randn(b, d, generator=gen).to(device)

                def run(
                    fn: Callable[..., object],
                    z0: Tensor = z0,
                    y: Tensor = y,
                    w: Tensor = w,
                    detach: bool = detach,
                ) -> None:
                    z = z0.detach().requires_grad_(True)
                    out = fn(z, y, detach_stats=detach)
                    out = out[0] if isinstance(out, tuple) else out
                    out.backward(w)  # type: ignore[union-attr]
                    sync()

                variants: dict[str, Callable[[], object]] = {
                    "guide": partial(run, straightforward_operator),
                    "library": partial(run, carrot_operator),
                }
                times = interleaved_median(variants, repeats=repeats)
                yield OperatorTiming(b, d, detach, times["guide"], times["library"])


def long_tailed_labels(n_images: int, n_classes: int, *, seed: int = 0) -> np.ndarray:
    """Labels with log-normal class sizes (at least 2 images a class), shuffled."""
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(0.0, 0.7, n_classes)
    sizes = np.maximum(2, np.round(sizes / sizes.sum() * n_images)).astype(np.int64)
    return rng.permutation(np.repeat(np.arange(n_classes), sizes))


@dataclass
class SamplerTiming:
    name: str
    sampler: str
    init_s: float
    epoch_s: float
    coverage: float


def sampler_timings(
    cases: tuple[tuple[str, int, int], ...] = (
        ("NABirds-size", 48_562, 555),
        ("iNat-size", 2_700_000, 10_000),
    ),
    *,
    batch_size: int = 64,
    k: int = 4,
) -> Iterator[SamplerTiming]:
    """Epoch build time and coverage of PKSampler and (if installed) MPerClassSampler."""
    from carrot.samplers import PKSampler

    for name, n, c in cases:
        labels = long_tailed_labels(n, c)
        start = time.perf_counter()
        pk = PKSampler(labels, batch_size=batch_size, k=k, seed=0)
        built = time.perf_counter()
        epoch = pk.epoch_batches()
        done = time.perf_counter()
        yield SamplerTiming(
            name, "PKSampler", built - start, done - built, np.unique(epoch).size / n
        )
        try:
            from pytorch_metric_learning.samplers import MPerClassSampler
        except ImportError:
            continue
        start = time.perf_counter()
        mp = MPerClassSampler(
            labels, m=k, batch_size=batch_size, length_before_new_iter=labels.size
        )
        built = time.perf_counter()
        flat = np.fromiter(iter(mp), dtype=np.int64)
        done = time.perf_counter()
        yield SamplerTiming(
            name, "MPerClassSampler", built - start, done - built, np.unique(flat).size / n
        )


@dataclass
class StepCost:
    """A training step of ``method`` against one of its ``baseline`` on the same model and batch."""

    backbone: str
    image_size: int
    batch: int
    device: str
    method: str
    baseline: str
    method_s: float
    baseline_s: float
    method_peak_mb: float
    baseline_peak_mb: float

    @property
    def time_ratio(self) -> float:
        return self.method_s / self.baseline_s

    @property
    def memory_ratio(self) -> float:
        return self.method_peak_mb / self.baseline_peak_mb


def check_step_arguments(methods: list[str], backbone: str, image_size: int, batch: int) -> None:
    """The training-step section's arguments, checked before any section runs: a one-line
    ``ValueError`` for an unknown method or backbone, a batch that does not hold two or more
    classes of K = 4 images, or an image side below 1."""
    from carrot.methods import get_method
    from carrot.train.model import checked_timm_name

    for method in methods:
        get_method(method)
    checked_timm_name(backbone, "--backbone")
    if batch < 8 or batch % 4:
        raise ValueError(
            f"--batch must be a multiple of K = 4 of 8 or more (two classes), got {batch}."
        )
    if image_size < 1:
        raise ValueError(f"--image-size must be 1 or more, got {image_size}.")


def _training_step(
    method: str, backbone: str, image_size: int, batch: int, k: int, device: str
) -> Callable[[], None]:
    """One optimizer step of ``method=METHOD`` (its settings at their defaults, its input
    transform, its loss) on a fixed batch, as the trainer runs it."""
    from carrot.methods import MethodContext, Step, build_method
    from carrot.train.model import build_model
    from carrot.train.schema import ModelConfig, default_sections

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone), num_classes=200, image_size=image_size)
    model = model.to(device)
    dim = int(model.head.weight.shape[1])  # type: ignore[index]
    objective = build_method(method, MethodContext(200, dim, default_sections())).to(device)
    params = [*model.parameters(), *objective.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.arange(batch // k, device=device).repeat_interleave(k)
    at = Step(progress=0.5, observe=False)

    def step() -> None:
        images, target = objective.transform(x.clone(), y)
        out = model(images)
        objective.loss(out.embedding, out.logits, target, model.head, step=at).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return step


def _peak_rss_mb(
    method: str, backbone: str, image_size: int, batch: int, k: int, steps: int
) -> float:
    """Peak resident memory of a fresh process that runs ``steps`` training steps (CPU)."""
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "torch.set_num_threads(torch.get_num_threads())\n"
        "from carrot.bench.speed import _training_step\n"
        f"step = _training_step({method!r}, {backbone!r}, {image_size}, {batch}, {k}, 'cpu')\n"
        f"for _ in range({steps}): step()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def step_cost(
    method: str | None = None,
    *,
    backbone: str = "resnet18",
    image_size: int = 112,
    batch: int = 64,
    k: int = 4,
    repeats: int = 10,
    memory_repeats: int = 2,
    device: str = "cpu",
) -> StepCost:
    """Time (median of interleaved steps) and peak memory of a training step of ``method``
    (default: :func:`default_method`) and of its baseline (itself for a baseline) on the same
    model and batch."""
    from carrot.methods import default_method, get_method

    method = method or default_method()
    baseline = get_method(method).baseline or method
    names = list(dict.fromkeys((baseline, method)))
    steps = {m: _training_step(m, backbone, image_size, batch, k, device) for m in names}
    times = interleaved_median(dict(steps), repeats=repeats, warmup=2)
    peaks: dict[str, float] = {}
    if device.startswith("cuda"):
        for m, step in steps.items():
            torch.cuda.reset_peak_memory_stats()
            step()
            peaks[m] = torch.cuda.max_memory_allocated() / 2**20
    else:
        samples: dict[str, list[float]] = {m: [] for m in names}
        for _ in range(memory_repeats):  # interleaved fresh processes
            for m in samples:
                samples[m].append(_peak_rss_mb(m, backbone, image_size, batch, k, steps=3))
        peaks = {m: float(np.median(v)) for m, v in samples.items()}
    return StepCost(
        backbone,
        image_size,
        batch,
        device,
        method,
        baseline,
        times[method],
        times[baseline],
        peaks[method],
        peaks[baseline],
    )
