"""NIfTI reading and writing on the real data (../shared/data) and synthetic volumes, against nibabel."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from diffsr.data.io import Record, read, write
from diffsr.data.normalize import default_policy, fit_intensity
from tests.data.io._helpers import unit_of


def test_kirby21_nifti_read_write(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "medical/kirby21/113-02-MPRAGE_processed_reg.nii.gz"
    img = nib.load(src)
    vol = img.get_fdata(dtype=np.float32)
    record = read(src, slice_axis=0)
    assert record.array.shape == (170, 1, 256, 256)
    np.testing.assert_array_equal(record.array[:, 0], vol)
    assert record.meta["zooms"] == pytest.approx([1.2, 1.0, 1.0])
    assert record.meta["spacing"] == pytest.approx([1.0, 1.0, 1.2])
    np.testing.assert_allclose(record.meta["affine"], img.affine)
    assert default_policy(record) == "percentile"
    nonzero = vol[vol != 0]
    p = fit_intensity(record, "percentile")
    assert (p.lo, p.hi) == pytest.approx(tuple(np.percentile(nonzero, [0.5, 99.5])), rel=1e-6)
    # round trip of a slab (slices 80..95 along axis 0) with min-max (no clipping)
    slab = Record(record.array[80:96], dict(record.meta))
    unit, intensity = unit_of(slab, "minmax")
    out = write(tmp_path / "slab.nii.gz", unit, like=slab, intensity=intensity)
    back = nib.load(out)
    assert back.get_data_dtype() == np.float32
    np.testing.assert_allclose(back.get_fdata(), vol[80:96], rtol=0, atol=1e-6 * float(vol.max()))
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    assert back.header.get_zooms() == pytest.approx((1.2, 1.0, 1.0))


def test_nifti_writer_scale_updates_in_plane_spacing(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "medical/ct/CT_pitch.nii.gz"  # oblique affine, 0.8125 x 0.8125 x 2.397 mm
    img = nib.load(src)
    record = read(src, slice_axis=2)
    assert record.array.shape == (58, 1, 175, 248)
    unit, intensity = unit_of(record, "dtype")
    up = np.repeat(np.repeat(unit[:4], 2, axis=2), 2, axis=3)
    out = write(tmp_path / "x2.nii.gz", up, like=record, intensity=intensity, scale=2)
    back = nib.load(out)
    assert back.shape == (350, 496, 4)
    assert back.header.get_zooms() == pytest.approx((0.8125 / 2, 0.8125 / 2, 2.3970494), rel=1e-5)
    # new voxel (i, j, k) is old voxel ((i + .5) / 2 - .5, (j + .5) / 2 - .5, k): same field of view
    for ijk in [(0, 0, 0), (349, 495, 3), (17, 200, 2)]:
        old = [(ijk[0] + 0.5) / 2 - 0.5, (ijk[1] + 0.5) / 2 - 0.5, ijk[2], 1.0]
        np.testing.assert_allclose(back.affine @ [*ijk, 1.0], img.affine @ old, atol=1e-4)
    assert back.get_data_dtype() == np.uint8
    stored = np.asanyarray(back.dataobj)
    np.testing.assert_array_equal(stored[::2, ::2, :], np.asanyarray(img.dataobj)[:, :, :4])


def test_ct_nifti_with_scl_slope(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "medical/ct/CT_AVM.nii.gz"
    img = nib.load(src)
    raw = np.asanyarray(img.dataobj.get_unscaled())
    slope = float(img.dataobj.slope)
    assert slope == pytest.approx(2.2086, abs=1e-4)
    record = read(src)
    assert record.meta["dtype"] == "uint8" and record.meta["slope"] == pytest.approx(slope)
    np.testing.assert_allclose(np.moveaxis(record.array[:, 0], 0, 2), raw * slope, rtol=1e-6)
    assert record.array.max() == pytest.approx(563.2, abs=0.05)
    assert record.meta["range"] == pytest.approx((0.0, 255 * slope))
    intensity = fit_intensity(record, "dtype")  # 0 .. 255 slope: the stored levels map exactly
    out = write(tmp_path / "ct.nii.gz", intensity.forward(record.array.astype(np.float64)), like=record,
                intensity=intensity)
    back = nib.load(out)
    assert back.get_data_dtype() == np.uint8
    assert float(back.dataobj.slope) == pytest.approx(slope) and float(back.dataobj.inter) == 0.0
    np.testing.assert_array_equal(np.asanyarray(back.dataobj.get_unscaled()), raw)


def test_nifti_4d_volume_index(tmp_path: Path) -> None:
    data = np.random.default_rng(8).random((6, 7, 5, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "v.nii.gz")
    record = read(tmp_path / "v.nii.gz", volume_index=2, slice_axis=1)
    assert record.array.shape == (7, 1, 6, 5)
    np.testing.assert_array_equal(record.array[:, 0], np.moveaxis(data[..., 2], 1, 0))
    assert record.meta["spacing"] == [2.0, 4.0, 3.0]


# ----------------------------------------------------------------------------- issue 18: headers never guessed


def test_4d_nifti_without_volume_index_is_an_error(tmp_path: Path) -> None:
    from diffsr.core.errors import DataError

    data = np.random.default_rng(0).random((8, 9, 3, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "fmri.nii.gz")
    with pytest.raises(DataError, match=r"4-D NIfTI with 2 volumes.*--volume-index") as info:
        read(tmp_path / "fmri.nii.gz")
    assert "\n" not in str(info.value)
    np.testing.assert_array_equal(read(tmp_path / "fmri.nii.gz", volume_index=1).array[:, 0],
                                  np.moveaxis(data[..., 1], 2, 0))
    # a 4-D file holding one volume needs no index
    nib.save(nib.Nifti1Image(data[..., :1], np.eye(4)), tmp_path / "one.nii.gz")
    assert read(tmp_path / "one.nii.gz").array.shape == (3, 1, 8, 9)


def test_nifti_with_a_negative_dimension_is_one_line(tmp_path: Path) -> None:
    import struct

    from diffsr.core.errors import DataError

    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.float32), np.eye(4)), tmp_path / "neg.nii")
    data = bytearray((tmp_path / "neg.nii").read_bytes())
    struct.pack_into("<8h", data, 40, 3, 8, -8, 2, 1, 1, 1, 1)  # dim[2] = -8
    (tmp_path / "neg.nii").write_bytes(bytes(data))
    with pytest.raises(DataError, match="dimensions") as info:
        read(tmp_path / "neg.nii")
    assert str(info.value).startswith(str(tmp_path / "neg.nii"))


def test_ct_nifti_in_hounsfield_units_keeps_its_full_range(tmp_path: Path) -> None:
    """auto normalization on CT (air at -1000 HU): min..max, so bone at 1280 HU is not clipped to a
    percentile (368 HU), and the inverse gives every HU back."""
    rng = np.random.default_rng(1)
    hu = np.full((24, 24, 4), -1000, np.int16)  # air
    hu[4:20, 4:20] = rng.integers(20, 60, (16, 16, 4))  # soft tissue
    hu[10, 10] = 1280  # a little bone: 0.2 % of the voxels, above the 99.5th percentile
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "ct.nii.gz")
    record = read(tmp_path / "ct.nii.gz")
    assert default_policy(record) == "minmax"
    intensity = fit_intensity(record, "auto")
    assert (intensity.lo, intensity.hi) == (-1000.0, 1280.0)
    assert fit_intensity(record, "percentile").hi < 1280  # what the MRI default would have done
    out = write(tmp_path / "o.nii.gz", intensity.forward(record.array), like=record, intensity=intensity)
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), hu)
