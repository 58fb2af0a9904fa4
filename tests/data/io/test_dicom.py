"""DICOM series on the real data (../shared/data): slice order, spacing, rescale, writing at scale 2,
against pydicom.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from diffsr.data.io import list_inputs, read, write
from diffsr.data.normalize import fit_intensity
from tests.data.io._helpers import unit_of


def _sorted_by_position(folder: Path) -> list[pydicom.Dataset]:
    headers = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(headers, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))


def test_brainix_dicom_series_order_spacing(shared_data: Path) -> None:
    folder = shared_data / "medical/brainix/FLAIR"
    assert list_inputs(folder) == [folder]
    record = read(folder)
    expected = _sorted_by_position(folder)
    assert record.array.shape == (22, 1, 288, 288)
    for i in (0, 7, 21):
        np.testing.assert_array_equal(record.array[i, 0], expected[i].pixel_array)
    # superior -> inferior file order, so ascending along the normal reverses InstanceNumber
    assert [int(pydicom.dcmread(f).InstanceNumber) for f in record.meta["files"]] == list(range(22, 0, -1))
    assert record.meta["spacing"][:2] == pytest.approx([float(v) for v in expected[0].PixelSpacing])
    assert record.meta["spacing"][2] == pytest.approx(6.0, abs=1e-3)  # SpacingBetweenSlices
    assert record.meta["bits"] == 12 and record.meta["range"] == (0.0, 4095.0)
    assert fit_intensity(record, "dtype").hi == 4095.0
    assert list_inputs(shared_data / "medical/brainix") == [shared_data / "medical/brainix/FLAIR",
                                                             shared_data / "medical/brainix/T1"]


def test_dicom_rescale_applied_and_inverted(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "medical/brainix/T1/IM-0001-0010.dcm"
    ds = pydicom.dcmread(src)
    ds.RescaleSlope, ds.RescaleIntercept = 2.5, -1024
    ds.save_as(tmp_path / "r.dcm")
    record = read(tmp_path / "r.dcm")
    stored = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(record.array[0, 0], stored * 2.5 - 1024)
    assert record.meta["range"] == (-1024.0, 4095 * 2.5 - 1024)
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "out", unit, like=record, intensity=intensity)
    back = pydicom.dcmread(next(out.iterdir()))
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)
    assert float(back.RescaleSlope) == 2.5 and float(back.RescaleIntercept) == -1024


def test_dicom_series_write_scale_2(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for name in ("IM-0001-0004.dcm", "IM-0001-0005.dcm", "IM-0001-0006.dcm"):
        shutil.copy(shared_data / "medical/brainix/FLAIR" / name, folder / name)
    record = read(folder)
    sources = _sorted_by_position(folder)
    unit, intensity = unit_of(record, "dtype")
    same = write(tmp_path / "same", unit, like=record, intensity=intensity)
    by_instance = sorted(sources, key=lambda d: int(d.InstanceNumber))
    for f, src in zip(sorted(same.iterdir()), by_instance, strict=True):
        back = pydicom.dcmread(f)
        np.testing.assert_array_equal(back.pixel_array, src.pixel_array)
    up = np.repeat(np.repeat(unit, 2, axis=2), 2, axis=3)
    out = write(tmp_path / "x2", up, like=record, intensity=intensity, scale=2)
    files = sorted(out.iterdir())
    assert len(files) == 3
    backs = [pydicom.dcmread(f) for f in files]
    assert len({b.SeriesInstanceUID for b in backs}) == 1
    assert backs[0].SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert len({b.SOPInstanceUID for b in backs} | {s.SOPInstanceUID for s in sources}) == 6
    by_number = {int(s.InstanceNumber): s for s in sources}
    for back in backs:
        src = by_number[int(back.InstanceNumber)]
        assert (back.Rows, back.Columns) == (576, 576)
        half = [float(v) / 2 for v in src.PixelSpacing]
        assert [float(v) for v in back.PixelSpacing] == pytest.approx(half)
        assert back.SeriesDescription == "sT2W/FLAIR super-resolved x2 (diffsr)"
        assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
        np.testing.assert_array_equal(back.pixel_array[::2, ::2], src.pixel_array)
        # the first pixel centre moved by -1/4 of an old pixel along rows and columns
        iop = np.asarray(src.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in src.PixelSpacing)
        expected = np.asarray(src.ImagePositionPatient, float) - 0.25 * (dc * iop[:3] + dr * iop[3:])
        np.testing.assert_allclose(np.asarray(back.ImagePositionPatient, float), expected, atol=1e-6)
    assert read(out).array.shape == (3, 1, 576, 576)
