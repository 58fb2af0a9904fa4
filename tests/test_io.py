"""Readers and writers on the real data (../shared/data) and on synthetic 16-bit / float files.

References are independent: PIL, nibabel, pydicom and tifffile read the files directly, and
the 16-bit colour PNG is encoded here by hand (every PNG filter type) from the PNG spec.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from diffsr.core.errors import ConfigError
from diffsr.data.io import Record, list_inputs, read, write
from diffsr.data.normalize import Intensity, default_policy, fit_intensity

# ----------------------------------------------------------------------------- helpers


def unit_of(record: Record, policy: str = "minmax") -> tuple[np.ndarray, Intensity]:
    intensity = fit_intensity(record, policy)
    return intensity.forward(record.array.astype(np.float64)), intensity


def png16_by_hand(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG whose row r uses filter type r % 5 (None, Sub, Up, Average, Paeth)."""
    h, w, _ = rgb.shape
    raw = rgb.astype(">u2").reshape(h, -1).view(np.uint8).astype(np.int64)  # (h, w * 6) bytes
    bpp = 6
    out = bytearray()
    for y in range(h):
        ftype = y % 5
        line = raw[y]
        up = raw[y - 1] if y > 0 else np.zeros_like(line)
        left = np.concatenate([np.zeros(bpp, np.int64), line[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        if ftype == 0:
            pred = np.zeros_like(line)
        elif ftype == 1:
            pred = left
        elif ftype == 2:
            pred = up
        elif ftype == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        out.append(ftype)
        out += ((line - pred) % 256).astype(np.uint8).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


def png16_decode_filter0(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB PNG written with filter 0 on every row (what our writer emits)."""
    data = path.read_bytes()
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype = ihdr[:4]
    assert (depth, ctype) == (16, 2)
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].copy().view(">u2").astype(np.uint16).reshape(h, w, 3)


# ----------------------------------------------------------------------------- PNG / TIFF / NPY


def test_roadscene_png_round_trip(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "infrared/roadscene/train/FLIR_00006.png"
    expected = np.asarray(Image.open(src))
    record = read(src)
    assert record.array.shape == (1, 1, 512, 640) and record.array.dtype == np.float32
    assert record.meta["dtype"] == "uint8" and record.meta["mode"] == "L"
    np.testing.assert_array_equal(record.array[0, 0], expected)
    assert default_policy(record) == "dtype"
    unit, intensity = unit_of(record, "dtype")
    assert (intensity.lo, intensity.hi) == (0.0, 255.0)
    out = write(tmp_path / "out.png", unit, like=record, intensity=intensity)
    with Image.open(out) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), expected)


def test_set5_rgb_png(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "natural/set5/img_005.png"
    expected = np.asarray(Image.open(src).convert("RGB"))
    record = read(src)
    assert record.array.shape == (1, 3, 344, 228)
    np.testing.assert_array_equal(np.moveaxis(record.array[0], 0, -1), expected)
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "rgb.png", unit, like=record, intensity=intensity)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)


def test_png16_grey_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65536, (24, 40), dtype=np.uint16)
    Image.fromarray(img).save(tmp_path / "g16.png")
    record = read(tmp_path / "g16.png")
    assert record.meta["dtype"] == "uint16" and record.meta["range"] == (0.0, 65535.0)
    np.testing.assert_array_equal(record.array[0, 0], img)
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "o16.png", unit, like=record, intensity=intensity)
    back = np.asarray(Image.open(out))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, img)


def test_png16_rgb_every_filter_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 65536, (11, 9, 3), dtype=np.uint16)
    png16_by_hand(tmp_path / "c16.png", img)
    record = read(tmp_path / "c16.png")
    assert record.meta["dtype"] == "uint16"
    np.testing.assert_array_equal(np.moveaxis(record.array[0], 0, -1), img)
    unit, intensity = unit_of(record, "dtype")
    out = write(tmp_path / "o.png", unit, like=record, intensity=intensity)
    np.testing.assert_array_equal(png16_decode_filter0(out), img)


def test_png_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (8, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    record = read(tmp_path / "a.png")
    assert record.array.shape == (1, 3, 8, 10) and record.meta["alpha_dropped"]
    np.testing.assert_array_equal(np.moveaxis(record.array[0], 0, -1), rgba[..., :3])


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


def test_float_png_source_writes_16bit_unit(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.linspace(-3.0, 5.0, 64, dtype=np.float32).reshape(8, 8))
    record = read(tmp_path / "f.npy")
    unit, intensity = unit_of(record, "minmax")
    out = write(tmp_path / "f.png", unit, like=record, intensity=intensity, fmt="png")
    back = np.asarray(Image.open(out))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, np.rint(unit[0, 0] * 65535).astype(np.uint16))


# ----------------------------------------------------------------------------- NIfTI


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


# ----------------------------------------------------------------------------- DICOM


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


def test_list_inputs_sorted_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.tif", "c.npy", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    assert list_inputs(tmp_path) == [tmp_path / "a.tif", tmp_path / "b.png", tmp_path / "c.npy"]
    assert list_inputs(tmp_path / "b.png") == [tmp_path / "b.png"]


# ----------------------------------------------------------------------------- normalisation


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
