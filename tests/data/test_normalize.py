"""Intensity policies (dtype, minmax, percentile, window) and their inverse."""

from __future__ import annotations

import numpy as np
import pytest

from diffsr.core.errors import ConfigError
from diffsr.data.io import Record
from diffsr.data.normalize import Intensity, check_fits, clipped, default_policy, fit_intensity, looks_like_ct


def test_intensity_policies_and_inverse() -> None:
    rng = np.random.default_rng(9)
    values = np.concatenate([np.zeros(500), rng.uniform(100.0, 900.0, 1500)]).astype(np.float32)
    record = Record(values.reshape(2, 1, 25, 40), {"format": "nifti", "path": "x.nii", "dtype": "int16",
                                                     "range": (-32768.0, 32767.0)})
    assert fit_intensity(record, "dtype").to_dict() == {"policy": "dtype", "lo": -32768.0, "hi": 32767.0}
    mm = fit_intensity(record, "minmax")
    assert (mm.lo, mm.hi) == (0.0, float(values.max()))
    pc = fit_intensity(record, "percentile", percentiles=(1.0, 99.0))
    assert (pc.lo, pc.hi) == pytest.approx(tuple(np.percentile(values[values != 0], [1.0, 99.0])))
    win = fit_intensity(record, "window", window=(200.0, 600.0))
    unit = win.forward(record.array.astype(np.float64))
    assert unit.min() == 0.0 and unit.max() == 1.0  # clipped outside the window
    inside = (record.array >= 200) & (record.array <= 600)
    np.testing.assert_allclose(win.inverse(unit)[inside], record.array[inside], rtol=1e-6)
    assert Intensity.from_dict(win.to_dict()) == win
    with pytest.raises(ConfigError, match="window"):
        fit_intensity(record, "window")
    with pytest.raises(ConfigError, match="did you mean|choose"):
        fit_intensity(record, "percentil")
    flat_meta = {"format": "png", "path": "f.png", "dtype": "float32"}
    flat = Record(np.full((1, 1, 4, 4), 7.0, np.float32), flat_meta)
    constant = fit_intensity(flat, "minmax")
    assert constant.hi > constant.lo and constant.forward(np.float64(7.0)) == 0.0
    assert default_policy(flat) == "minmax"


# ----------------------------------------------------------------------------- issue 18: units of real sensors


def _record(values: np.ndarray, fmt: str, dtype: str, **meta: object) -> Record:
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    rng = (float(info.min), float(info.max)) if info is not None else None
    return Record(values.astype(np.float32).reshape(1, 1, *values.shape[-2:]) if values.ndim == 2
                  else values.astype(np.float32), {"format": fmt, "path": f"x.{fmt}", "dtype": dtype, "range": rng,
                                                   **meta})


def test_auto_policy_keeps_units_of_wide_integers() -> None:
    """auto: 8-bit images use their type; 14-bit thermal counts in uint16, int16 HU and int32 use the
    data's own range (the type's range would squeeze them into a sliver of [0, 1])."""
    rng = np.random.default_rng(0)
    thermal = rng.integers(7000, 9001, (16, 16))
    assert default_policy(_record(thermal, "png", "uint16")) == "minmax"
    auto = fit_intensity(_record(thermal, "png", "uint16"), "auto")
    assert (auto.lo, auto.hi) == (float(thermal.min()), float(thermal.max()))
    assert default_policy(_record(rng.integers(0, 256, (8, 8)), "png", "uint8")) == "dtype"
    assert default_policy(_record(rng.integers(-5, 2**30, (8, 8)), "npy", "int32")) == "minmax"
    assert default_policy(_record(rng.random((8, 8)), "tiff", "float32")) == "minmax"
    brain = rng.random((2, 1, 16, 16)) * 1e6  # MRI: percentiles, as the data MANIFEST advises
    assert default_policy(_record(brain, "nifti", "float32")) == "percentile"


def test_ct_is_recognised_and_mri_with_a_few_negatives_is_not() -> None:
    rng = np.random.default_rng(1)
    ct = np.full((2, 1, 16, 16), -1000.0)
    ct[:, :, 4:12, 4:12] = rng.integers(0, 80, (2, 1, 8, 8))
    assert looks_like_ct(_record(ct, "nifti", "int16")) and default_policy(_record(ct, "nifti", "int16")) == "minmax"
    assert looks_like_ct(_record(np.zeros((1, 1, 4, 4)), "dicom", "int16", modality="CT"))
    mri = rng.random((2, 1, 16, 16)) * 1e6
    mri[0, 0, 0, :3] = -9460.0  # kirby21 T2w: 17 slightly negative voxels from interpolation
    assert not looks_like_ct(_record(mri, "nifti", "float32"))


def test_check_fits_flags_dtype_on_narrow_counts_and_windows_that_miss() -> None:
    counts = np.random.default_rng(2).integers(7000, 9001, (16, 16))
    thermal = _record(counts, "png", "uint16")
    why = check_fits(thermal, fit_intensity(thermal, "dtype"))
    share = 100 * (counts.max() - counts.min()) / 65535  # about 3 %
    assert why is not None and f"{share:.1f} %" in why and "'dtype'" in why
    assert check_fits(thermal, fit_intensity(thermal, "minmax")) is None
    miss = fit_intensity(thermal, "window", window=(0.0, 100.0))
    assert "100 % of the values" in (check_fits(thermal, miss) or "")


def test_check_fits_accepts_dark_and_constant_8bit_images_on_their_type() -> None:
    """8-bit images live on 0..255: a dark photo (values 0..20) or a constant one is not a misfit."""
    dark = _record(np.random.default_rng(3).integers(0, 21, (16, 16)), "png", "uint8")
    flat = _record(np.zeros((16, 16)), "tiff", "uint8")
    for record in (dark, flat):
        assert check_fits(record, fit_intensity(record, "dtype")) is None
    narrow16 = _record(np.random.default_rng(3).integers(0, 21, (16, 16)), "png", "uint16")
    assert check_fits(narrow16, fit_intensity(narrow16, "dtype")) is not None  # 20 of 65535: a sliver


def test_clipped_counts_what_a_percentile_saturates() -> None:
    values = np.concatenate([np.full(990, 40.0), np.full(10, 1280.0)]).reshape(1, 1, 25, 40)
    record = _record(values, "nifti", "int16")
    cut = clipped(record, Intensity("percentile", 0.0, 368.0))
    assert cut.fraction_high == pytest.approx(0.01) and cut.fraction_low == 0.0
    assert (cut.data_min, cut.data_max) == (40.0, 1280.0)


def test_window_defaults_to_the_dicom_window() -> None:
    record = _record(np.linspace(-1000, 2000, 64).reshape(8, 8), "dicom", "int16", window=[-160.0, 240.0])
    intensity = fit_intensity(record, "window")
    assert (intensity.lo, intensity.hi) == (-160.0, 240.0)
    with pytest.raises(ConfigError, match="--window"):
        fit_intensity(_record(np.zeros((4, 4)), "png", "uint16"), "window")
