"""carrot.train.runtime: asking for CUDA on a machine without it is one line, in train and predict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_run import carrot_cli, one_line_error

pytestmark = pytest.mark.slow


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it(probe_run: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    done = carrot_cli("train", "--config", repo / "configs" / "cub_resnet50.yaml",
                      f"output_dir={tmp_path / 'cub'}")  # fmt: skip
    one_line_error(done, "CUDA is not available")
    assert not (tmp_path / "cub").exists()
    ckpt = probe_run / "run" / "checkpoints" / "last.pt"
    for device, message in (("cuda", "CUDA is not available"), ("gpu0", "must be auto, cpu")):
        done = carrot_cli("predict", "--checkpoint", ckpt, probe_run / "pets" / "test", "--device",
                          device, "--out", tmp_path / "p.csv")  # fmt: skip
        one_line_error(done, "--device", message)
    assert not (tmp_path / "p.csv").exists()
    done = carrot_cli("train", "train.device=cuda:x", "--print-config")
    assert done.returncode == 0  # a device is checked when it is used, not when printed
