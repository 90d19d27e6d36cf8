"""carrot.data.base: 16-bit images are scaled, not clipped, in training and in ``carrot predict``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from cli_run import COLORS, carrot_cli

pytestmark = pytest.mark.slow


def test_sixteen_bit_images_are_scaled_in_predict_and_training(
    probe_run: Path, tmp_path: Path
) -> None:
    import numpy as np

    from carrot.data.base import load_rgb

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    path = tmp_path / "deep" / "ramp.png"
    path.parent.mkdir()
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(load_rgb(path))
    assert (rgb[..., 0] == 255).mean() < 0.05  # PIL's clipping made 98% of it white
    assert np.array_equal(
        rgb[0, :, 0], np.round(ramp[0].astype(np.int64) * 255 / 65535).astype(np.uint8)
    )
    preds = tmp_path / "p.csv"
    done = carrot_cli("predict", "--checkpoint", probe_run / "run" / "checkpoints" / "last.pt",
                      path.parent, "--out", preds)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = list(csv.DictReader(preds.open()))
    assert row["error"] == "" and row["label"] in COLORS
