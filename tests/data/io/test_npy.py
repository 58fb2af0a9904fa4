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


def test_npy_float_beyond_float32_is_one_line(tmp_path: Path) -> None:
    from diffsr.core.errors import DataError

    np.save(tmp_path / "huge.npy", np.full((16, 16), 1e300))
    with pytest.raises(DataError, match="float32 range") as info:
        read(tmp_path / "huge.npy")
    assert str(info.value).startswith(str(tmp_path / "huge.npy"))


def test_npy_near_float32_max_normalises_without_overflow(tmp_path: Path) -> None:
    """values +-3e38: (a - lo) would overflow float32; the mapping runs in float64 and stays exact."""
    values = np.array([[-3e38, 0.0], [1e38, 3e38]], np.float32).repeat(8, 0).repeat(8, 1)
    np.save(tmp_path / "wide.npy", values)
    record = read(tmp_path / "wide.npy")
    unit, intensity = unit_of(record, "minmax")
    v = values.astype(np.float64)
    expected = (v - v.min()) / (v.max() - v.min())
    np.testing.assert_allclose(intensity.forward(record.array)[0, 0], expected, rtol=1e-6, atol=1e-7)
    back = np.load(write(tmp_path / "o.npy", unit, like=record, intensity=intensity))
    np.testing.assert_allclose(back, values, rtol=1e-6)


def test_int32_npy_counts_keep_their_units(tmp_path: Path) -> None:
    counts = (1_000_000 + np.random.default_rng(8).integers(0, 200_000, (16, 12))).astype(np.int32)
    np.save(tmp_path / "c.npy", counts)
    record = read(tmp_path / "c.npy")
    from diffsr.data.normalize import default_policy, fit_intensity

    assert default_policy(record) == "minmax"  # not the int32 type's range: 1/20000 of [0, 1]
    intensity = fit_intensity(record, "auto")
    assert (intensity.lo, intensity.hi) == (float(counts.min()), float(counts.max()))
    back = np.load(write(tmp_path / "o.npy", intensity.forward(record.array), like=record, intensity=intensity))
    np.testing.assert_array_equal(back, counts)
