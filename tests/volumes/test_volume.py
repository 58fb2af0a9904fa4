"""Volumes with their geometry: NIfTI and DICOM series read as (array, affine), written on a new grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from diffsr.core.errors import DataError
from diffsr.data.io import read
from diffsr.volumes import read_volume, write_volume
from tests.volumes._helpers import phantom, write_dicom_series, write_nifti


def test_nifti_volume_keeps_the_file_axis_order_and_affine(tmp_path: Path) -> None:
    data = phantom((12, 10, 5))
    path = write_nifti(tmp_path / "v.nii.gz", data, (0.9, 0.9, 4.5))
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, nib.load(str(path)).affine)
    assert vol.spacing == pytest.approx((0.9, 0.9, 4.5)) and vol.format == "nifti"


def test_dicom_series_affine_maps_voxels_to_the_slice_positions(tmp_path: Path) -> None:
    data = phantom((5, 16, 12))
    folder = write_dicom_series(tmp_path / "series", data, pixel=0.8, spacing=6.0)
    vol = read_volume(folder)
    assert vol.shape == (5, 16, 12) and vol.spacing == pytest.approx((6.0, 0.8, 0.8))
    ipps = [np.asarray(read(folder).headers[k].ImagePositionPatient, float) for k in range(5)]
    for k in range(5):  # voxel (k, 0, 0) is slice k's first pixel centre
        np.testing.assert_allclose(vol.affine @ [k, 0, 0, 1], [*ipps[k], 1], atol=1e-6)
    # voxel (0, r, c): r rows down the column cosines, c columns along the row cosines (DICOM C.7.6.2)
    ds = read(folder).headers[0]
    iop = np.asarray(ds.ImageOrientationPatient, float)
    expected = ipps[0] + 3 * 0.8 * iop[3:] + 2 * 0.8 * iop[:3]
    np.testing.assert_allclose((vol.affine @ [0, 3, 2, 1])[:3], expected, atol=1e-6)


def test_dicom_series_with_a_missing_slice_names_the_gap(tmp_path: Path) -> None:
    positions = [0.0, 6.0, 12.0, 24.0, 30.0]  # slice at 18 mm missing
    folder = write_dicom_series(tmp_path / "gap", phantom((5, 8, 8)), positions=positions)
    with pytest.raises(DataError, match=r"a gap of 12.00 mm between slices 2 and 3 \(IM0003.dcm -> IM0004.dcm\), "
                                        r"where the others are 6.00 mm apart \(a missing slice\?\)"):
        read_volume(folder)


def test_nifti_writer_puts_the_new_grid_in_the_header(tmp_path: Path) -> None:
    src = read_volume(write_nifti(tmp_path / "v.nii.gz", phantom((6, 7, 4)), (1.0, 1.0, 4.0)))
    affine = src.affine.copy()
    affine[:3, 2] /= 4.0  # a 4x finer third axis
    values = np.random.default_rng(0).random((6, 7, 16)).astype(np.float32)
    write_volume(tmp_path / "out.nii.gz", values, src, affine)
    img = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert img.header.get_zooms() == pytest.approx((1.0, 1.0, 1.0))
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_fdata(), values, atol=1e-6)


def test_dicom_writer_places_each_new_slice(tmp_path: Path) -> None:
    src = read_volume(write_dicom_series(tmp_path / "s", phantom((4, 10, 9)), spacing=6.0))
    affine = src.affine.copy()
    affine[:3, 0] /= 3.0  # slices every 2 mm
    values = np.full((12, 10, 9), 500.0, np.float32)
    out = write_volume(tmp_path / "out", values, src, affine)
    back = read(out)
    assert back.array.shape == (12, 1, 10, 9)
    for j, ds in enumerate(back.headers):
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float), (affine @ [j, 0, 0, 1])[:3], atol=1e-4)
        assert float(ds.SliceThickness) == pytest.approx(2.0) and float(ds.SpacingBetweenSlices) == pytest.approx(2.0)
        assert ds.ImageType[0] == "DERIVED" and int(ds.InstanceNumber) == j + 1
    assert len({ds.SeriesInstanceUID for ds in back.headers}) == 1
    assert back.headers[0].SeriesInstanceUID != src.record.headers[0].SeriesInstanceUID
    np.testing.assert_allclose(back.array, 500.0)
    assert back.meta["spacing"] == pytest.approx([0.8, 0.8, 2.0])
    # slice locations move with the positions: 2 mm per slice along the normal
    locations = [float(ds.SliceLocation) for ds in back.headers]
    np.testing.assert_allclose(np.diff(locations), 2.0, atol=1e-4)


def test_dicom_input_written_as_nifti_is_in_ras(tmp_path: Path) -> None:
    src = read_volume(write_dicom_series(tmp_path / "s", phantom((4, 6, 5))))
    write_volume(tmp_path / "o.nii.gz", src.data, src, src.affine, fmt="nifti")
    img = nib.load(str(tmp_path / "o.nii.gz"))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(img.affine, lps_to_ras @ src.affine, atol=1e-6)
    np.testing.assert_allclose(img.get_fdata(), src.data)
