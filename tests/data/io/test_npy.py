"""NumPy arrays: every layout read as (N, C, H, W) and written back as it came."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffsr.data.io import read, write
from tests.data.io._helpers import unit_of


@pytest.mark.parametrize(
    ("shape", "nchw"),
    [((12, 10), (1, 1, 12, 10)), ((3, 12, 10), (1, 3, 12, 10)), ((12, 10, 3), (1, 3, 12, 10)),
     ((5, 12, 10), (5, 1, 12, 10)), ((2, 1, 12, 10), (2, 1, 12, 10))],
)
def test_npy_layouts_round_trip(tmp_path: Path, shape: tuple[int, ...], nchw: tuple[int, ...]) -> None:
    array = np.random.default_rng(7).integers(0, 256, shape).astype(np.uint8)
    np.save(tmp_path / "a.npy", array)
    record = read(tmp_path / "a.npy")
    assert record.array.shape == nchw
    unit, intensity = unit_of(record, "dtype")
    write(tmp_path / "b.npy", unit, like=record, intensity=intensity)
    back = np.load(tmp_path / "b.npy")
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
