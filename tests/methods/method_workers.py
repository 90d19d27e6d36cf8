"""A test method with learnable parameters and state, and the worker of its gloo DDP run."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carrot.methods import LossResult, Method, MethodContext, Step, register_method
from carrot.methods.base import _REGISTRY
from carrot.settings import Range, check_ranges, ranged


@dataclass
class CentresSettings:
    weight: float = ranged(0.1, Range(0))
    """Weight of the pull towards the class centre."""
    lr_mult: float = ranged(10.0, Range(0, open_lo=True))
    """Learning rate of the centres relative to train.lr."""

    def validate(self, *, prefix: str = "") -> None:
        check_ranges(self, prefix=prefix)


class Centres(Method):
    """CE + weight · ‖ẑ − c_y‖² with learnable centres (own lr) and state (a count, a mean)."""

    name = "test_centres"
    description = "CE + weight · ‖ẑ − c_y‖² (test)"
    reference = "a test, 2026"
    settings_type = CentresSettings

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.centres = nn.Parameter(torch.zeros(context.num_classes, context.embedding_dim))
        self.register_buffer("seen", torch.zeros(()))
        self.register_buffer("mean_norm", torch.zeros(()))

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.centres], "weight_decay": 0.0, "lr_mult": self.settings().lr_mult}]

    def loss(
        self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step
    ) -> LossResult:
        z_hat = F.normalize(z.float(), dim=1)
        pull = ((z_hat - self.centres[target]) ** 2).sum(1).mean()
        with torch.no_grad():
            self.seen += 1
            self.mean_norm.mul_(0.9).add_(0.1 * z.float().norm(dim=1).mean())
        ce = F.cross_entropy(logits.float(), target)
        return LossResult(ce + self.settings().weight * pull, {"ce": ce.detach()}, {})


def register() -> None:
    register_method(Centres)


def unregister() -> None:
    _REGISTRY.pop(Centres.name, None)


def ddp_worker(rank: int, world: int, port: int, overrides: list[str], out_dir: str) -> None:
    """One rank of a trainer run of test_centres under gloo DDP; saves its method state."""
    from carrot.train import Trainer, load_config

    os.environ.update(
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    register()
    trainer = Trainer(load_config(None, overrides))
    trainer.fit()
    # fit destroyed its group: no DDP wrapper (whose reducer would keep the group) may be left
    ddp = [o for o in gc.get_objects() if isinstance(o, nn.parallel.DistributedDataParallel)]
    state = {**trainer.method.state_dict(), "ddp_alive": torch.tensor(len(ddp))}
    torch.save(state, f"{out_dir}/rank{rank}.pt")
