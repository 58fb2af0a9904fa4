"""TIFF round trips (16-bit grey and RGB, float32, pages) against tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from diffsr.data.io import read, write
from tests.data.io._helpers import unit_of


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(3).integers(0, 65536, (20, 30), dtype=np.uint16),
        np.random.default_rng(4).integers(0, 65536, (20, 30, 3), dtype=np.uint16),
        np.random.default_rng(5).normal(100.0, 30.0, (20, 30)).astype(np.float32),
        np.random.default_rng(6).integers(0, 4096, (4, 20, 30), dtype=np.uint16),  # pages
    ],
    ids=["u16", "u16rgb", "float32", "pages"],
)
def test_tiff_round_trip(tmp_path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "in.tif", array, photometric="rgb" if array.ndim == 3 and array.shape[-1] == 3
                     else "minisblack")
    record = read(tmp_path / "in.tif")
    assert record.meta["dtype"] == str(array.dtype)
    if array.ndim == 3 and array.shape[-1] == 3:
        np.testing.assert_array_equal(np.moveaxis(record.array[0], 0, -1), array)
    elif array.ndim == 3:
        np.testing.assert_array_equal(record.array[:, 0], array)
    else:
        np.testing.assert_array_equal(record.array[0, 0], array)
    unit, intensity = unit_of(record, "minmax")
    out = write(tmp_path / "out.tif", unit, like=record, intensity=intensity)
    back = tifffile.imread(out)
    assert back.dtype == array.dtype and back.shape == array.shape
    if array.dtype.kind == "f":
        np.testing.assert_allclose(back, array, rtol=1e-6, atol=1e-4)  # float32 round trip via float64
    else:
        np.testing.assert_array_equal(back, array)
