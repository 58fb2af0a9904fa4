"""write(): the output is never copied whole to float64 (issue 18: a 12288 x 12800 result must be
written in bounded memory). Measured with tracemalloc, which sees numpy's allocations."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from diffsr.data.io import Record, read, write
from diffsr.data.normalize import Intensity

SIDE = 2048  # a float64 copy of the image: 32 MiB; the old writer made four


@pytest.mark.parametrize(("suffix", "dtype"), [(".png", "uint16"), (".tif", "uint16"), (".npy", "int32"),
                                               (".nii.gz", "int16")])
def test_write_peak_memory_is_below_one_float64_copy(tmp_path: Path, suffix: str, dtype: str) -> None:
    fmt = {".png": "png", ".tif": "tiff", ".npy": "npy", ".nii.gz": "nifti"}[suffix]
    src = tmp_path / "like.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 1), np.int16), np.eye(4)), src)
    like = Record(np.zeros((1, 1, 4, 4), np.float32), {"format": fmt, "path": str(src), "dtype": dtype,
                                                        "spacing": None, "layout": "HW", "slice_axis": 2,
                                                        "affine": np.eye(4).tolist(), "slope": 1.0, "inter": 0.0})
    unit = np.random.default_rng(0).random((1, 1, SIDE, SIDE), dtype=np.float32)
    intensity = Intensity("minmax", 100.0, 9000.0)
    tracemalloc.start()
    try:
        out = write(tmp_path / f"out{suffix}", unit, like=like, intensity=intensity)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < SIDE * SIDE * 8, f"peak {peak / 2**20:.1f} MiB"
    # and the values are right: lo + u (hi - lo), rounded
    back = read(out).array[0, 0]
    np.testing.assert_array_equal(back, np.rint(100.0 + unit[0, 0].astype(np.float64) * 8900.0))
