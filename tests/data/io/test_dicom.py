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
from diffsr.data.normalize import Intensity, fit_intensity
from tests._dicom import new_instance
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


# ----------------------------------------------------------------------------- issue 18: synthetic series


def _dataset(rows: int = 8, cols: int = 10, frames: int = 1, series: str = "1.2.826.0.1.3680043.2.1",
             number: int = 1, seed: int = 0) -> pydicom.Dataset:
    """A minimal uint16 MR image (``frames`` > 1: a multi-frame file) with random pixels."""
    from pydicom.uid import MRImageStorage

    ds = new_instance(MRImageStorage)
    ds.SeriesInstanceUID, ds.InstanceNumber, ds.Modality = series, number, "MR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.random.default_rng(seed).integers(0, 4096, (frames, rows, cols), dtype=np.uint16)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_non_numeric_pixel_spacing_is_one_line(tmp_path: Path) -> None:
    from diffsr.core.errors import DataError

    ds = _dataset()
    ds.PixelSpacing = [0.5, 0.5]
    path = _save(ds, tmp_path / "ps.dcm")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"0.5\\0.5", b"abc\\def"))  # the same length: a valid file, a bad value
    with pytest.raises(DataError, match="PixelSpacing") as info:
        read(path)
    assert str(info.value).startswith(str(path)) and "not numeric" in str(info.value)


def test_a_zero_rescale_slope_is_read_as_one_with_a_warning(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """RescaleSlope 0 would make every value the intercept: it is read as 1 and named, not used silently."""
    ds = _dataset()
    ds.RescaleSlope, ds.RescaleIntercept = 0, -1024
    path = _save(ds, tmp_path / "s0.dcm")
    with caplog.at_level("WARNING"):
        record = read(path)
    stored = pydicom.dcmread(path).pixel_array.astype(np.float32)
    np.testing.assert_array_equal(record.array[0, 0], stored - 1024)
    assert "RescaleSlope 0 is invalid; read as 1" in caplog.text
    out = write(tmp_path / "out" / "s0_sr", record.array / 4096, like=record,
                intensity=Intensity("minmax", 0.0, 4096.0), scale=1)
    back = pydicom.dcmread(next(Path(out).iterdir()))
    assert float(back.RescaleSlope) == 1.0  # what was used: a reader of the output gets its values


def test_structured_report_in_a_series_is_skipped_with_a_note(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from pydicom.uid import generate_uid

    folder = tmp_path / "series"
    folder.mkdir()
    images = [_save(_dataset(number=i + 1, seed=i), folder / f"im{i}.dcm") for i in range(2)]
    sr = _dataset()
    del sr.PixelData
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR Storage
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.SeriesInstanceUID = generate_uid()  # reports usually carry a series of their own
    _save(sr, folder / "report.dcm")
    caplog.set_level("WARNING")
    record = read(folder)
    assert record.array.shape == (2, 1, 8, 10)
    for i, path in enumerate(images):
        np.testing.assert_array_equal(record.array[i, 0], pydicom.dcmread(path).pixel_array)
    notes = [r.getMessage() for r in caplog.records if "report.dcm" in r.getMessage()]
    assert len(notes) == 1 and "SR" in notes[0] and "not an image" in notes[0]


@pytest.mark.parametrize("layout", ["two-multiframe", "multiframe-and-single"])
def test_multiframe_files_of_one_series_round_trip(tmp_path: Path, layout: str) -> None:
    """Several files of one series, some multi-frame: every frame read, and each file written back with
    as many frames as it had (this failed in the writer, after inference)."""
    folder = tmp_path / "series"
    folder.mkdir()
    frames = [3, 2] if layout == "two-multiframe" else [3, 1]
    sources = [_save(_dataset(frames=f, number=i + 1, seed=i), folder / f"f{i}.dcm") for i, f in enumerate(frames)]
    record = read(folder)
    expected = np.concatenate([pydicom.dcmread(p).pixel_array.reshape(-1, 8, 10) for p in sources])
    assert record.array.shape == (sum(frames), 1, 8, 10)
    np.testing.assert_array_equal(record.array[:, 0], expected)
    unit, intensity = unit_of(record, "dtype")
    up = np.repeat(np.repeat(unit, 2, axis=2), 2, axis=3)
    out = write(tmp_path / "out", up, like=record, intensity=intensity, scale=2)
    backs = [pydicom.dcmread(out / p.name) for p in sources]
    assert [int(getattr(b, "NumberOfFrames", 1) or 1) for b in backs] == frames
    got = np.concatenate([b.pixel_array.reshape(-1, 16, 20) for b in backs])
    np.testing.assert_array_equal(got[:, ::2, ::2], expected)


def test_enhanced_multiframe_functional_group_spacing_follows_the_scale(tmp_path: Path) -> None:
    """Enhanced multi-frame DICOM keeps its pixel spacing in functional groups: read from there, and
    divided by the scale there (shared and per frame) like the top-level PixelSpacing; per-frame
    positions move to the first pixel centre of the finer grid."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = _dataset(frames=2)
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.6], 2.0
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(2):
        position = Dataset()
        position.ImagePositionPatient = [10.0, 20.0, 5.0 * k]
        frame = Dataset()
        frame.PlanePositionSequence = Sequence([position])
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    path = _save(ds, tmp_path / "enhanced.dcm")
    record = read(path)
    assert record.meta["spacing"][:2] == pytest.approx([0.8, 0.6])
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "out", np.repeat(np.repeat(unit, 2, axis=2), 2, axis=3), like=record,
                intensity=intensity, scale=2)
    back = pydicom.dcmread(next(out.iterdir()))
    spacing = back.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == pytest.approx([0.4, 0.3])
    for k, frame in enumerate(back.PerFrameFunctionalGroupsSequence):
        ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        # -1/4 of an old pixel along the rows (x, column spacing 0.6) and the columns (y, row spacing 0.8)
        assert ipp == pytest.approx([10.0 - 0.25 * 0.6, 20.0 - 0.25 * 0.8, 5.0 * k])
