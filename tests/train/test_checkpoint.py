"""carrot.train.checkpoint: checkpoints whose weights hold NaN or inf are refused by predict,
export and eval alike, in one line (the ``carrot`` command in a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_run import carrot_cli, one_line_error

pytestmark = pytest.mark.slow


def _poisoned(probe_run: Path, tmp_path: Path, value: float) -> Path:
    ckpt = torch.load(probe_run / "run" / "checkpoints" / "last.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and "head" in k)
    ckpt["model"][name].view(-1)[0] = value
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_checkpoints_with_non_finite_weights_are_refused(
    probe_run: Path, tmp_path: Path, value: float
) -> None:
    bad = _poisoned(probe_run, tmp_path, value)
    preds, folder = tmp_path / "preds.csv", tmp_path / "export"
    for args in (
        ("predict", "--checkpoint", bad, probe_run / "pets" / "test", "--out", preds),
        ("export", "--checkpoint", bad, "--out", folder),
        ("eval", "--checkpoint", bad, f"data.root={probe_run / 'pets'}"),
    ):
        one_line_error(carrot_cli(*args), "hold NaN or inf")
    assert not preds.exists() and not folder.exists()
