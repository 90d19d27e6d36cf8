"""The pretrained → fine-grained regime: a pretraining run's backbone as a weights file.

A suite's ``pretrain`` entries are ordinary ``carrot train`` runs (cached under
``OUT/pretrain/<source>/s<seed>/`` and resumed like any cell). Their backbone is written once as
``backbone.safetensors`` beside the run; every fine-tuning cell of the same seed loads it with
``model.pretrained=true model.pretrained_path=<file>`` and a fresh classifier, so the methods of a
seed differ only in the fine-tuning objective.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["export_backbone"]


def export_backbone(run_dir: Path, path: Path) -> Path:
    """Write the backbone of ``run_dir/checkpoints/last.pt`` (the ``backbone.*`` entries of the
    model's state dict, prefix removed) to ``path`` as safetensors; kept if already written."""
    from safetensors.torch import save_file

    from carrot.train.checkpoint import load_checkpoint
    from carrot.train.model import backbone_state

    if path.is_file():
        return path
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    state = {k: v.contiguous() for k, v in backbone_state(ckpt["model"]).items()}
    if not state:
        raise RuntimeError(f"{run_dir}/checkpoints/last.pt holds no backbone.* weights.")
    tmp = path.with_name(path.name + ".tmp")
    meta = {"source_run": str(run_dir), "epoch": str(ckpt["state"]["epoch"])}
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)  # a reader never sees half a file
    return path
