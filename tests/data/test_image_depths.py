"""Images of other depths than 8 bits read as their values mean (carrot.data.base.convert_image):
16-bit scaled, 8-bit data in 32-bit mode I as it is, float TIFFs by their range, and NaN,
infinite or out-of-range pixels one error naming the file (issue 32, medium item)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carrot.data import DatasetError
from carrot.data.base import load_rgb

RAMP8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))  # (8, 64)


def _save(path: Path, values: np.ndarray, mode: str) -> Path:
    Image.fromarray(values, mode=mode).save(path)
    assert Image.open(path).mode == mode
    return path


def _gray(path: Path) -> np.ndarray:
    rgb = np.asarray(load_rgb(path))
    assert (rgb[..., 0] == rgb[..., 1]).all()
    return rgb[..., 0]


@pytest.mark.parametrize(
    ("values", "mode", "suffix"),
    [
        (RAMP8.astype(np.int32), "I", "tif"),  # 8-bit data in mode I: was read as 16-bit, black
        (RAMP8.astype(np.float32), "F", "tif"),  # a float TIFF of 0..255
        (RAMP8.astype(np.float32) / 255, "F", "tif"),  # a float TIFF in [0, 1]: was black
        (RAMP8.astype(np.int32) * 257, "I", "tif"),  # 16-bit data in mode I
    ],
)
def test_other_depths_read_as_the_8_bit_ramp(
    tmp_path: Path, values: np.ndarray, mode: str, suffix: str
) -> None:
    path = _save(tmp_path / f"x.{suffix}", values, mode)
    assert np.array_equal(_gray(path), RAMP8)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.nan, "NaN or infinite pixel values"),
        (np.inf, "NaN or infinite pixel values"),
        (-1.0, r"pixel values in \[-1, "),
        (1e6, r"pixel values in \[0, 1e\+06\]"),
    ],
)
def test_pixels_no_rule_reads_are_one_error_naming_the_file(
    tmp_path: Path, value: float, message: str
) -> None:
    values = RAMP8.astype(np.float32)
    values[0, 0] = value
    path = _save(tmp_path / "bad.tif", values, "F")
    with pytest.raises(DatasetError, match=rf"cannot read image .*bad.tif: .*{message}"):
        load_rgb(path)
    ints = RAMP8.astype(np.int32)
    ints[0, 0] = -5 if value < 0 else 100_000
    path = _save(tmp_path / "bad_i.tif", ints, "I")
    if np.isfinite(value):
        with pytest.raises(DatasetError, match=r"bad_i.tif: .*outside the 8- or 16-bit range"):
            load_rgb(path)
