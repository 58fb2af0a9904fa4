"""Generated hostile files through ``diffsr sr`` (hypothesis, issue 18).

Hypothesis draws a format (PNG, TIFF, NPY, NIfTI, DICOM), a file name (spaces, dots, dashes,
brackets that rich would read as markup, non-ASCII), a dtype, a shape (1 to 20 pixels a side,
grey or RGB, 1 to 3 slices, a 4-D NIfTI now and then) and a value range (the dtype's whole range,
a narrow band such as 14-bit counts in a uint16, a constant, HU with a rescale intercept, floats
from 1e-3 to 1e6, NaN, 1e300). Each file goes through the real CLI in-process with a tiny trained
model (x4). Every case must either

- exit 0 and write the output in the input's units: the same dtype, 4x the size in-plane, read
  back with an independent reader (PIL, tifffile, numpy, nibabel, pydicom), and, under a mapping
  fitted to the data (minmax, percentile; recorded in ``<output>.json``), values inside the
  input's own range; or
- exit 2 with exactly one ``error:`` line that names the file, and write nothing.

It never traces back. ``derandomize=True``: the same examples on every run (CI is deterministic).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from diffsr.cli import main
from tests._dicom import new_instance

SCALE = 4
TINY = ["data.patch_size=32", "data.batch_size=2", "net.width=16", "net.channel_mult=[1,2]", "train.threads=1",
        "train.time_limit=null", "train.warmup_steps=0", "sample.steps=1", "process.steps=2", "train.audit=false",
        "train.steps=1"]
NAME_CHARS = "abcXYZ019 _-.[]()é字"
INT_DTYPES = {"png": ["uint8", "uint16"], "tiff": ["uint8", "uint16", "int16", "int32", "float32", "float64"],
              "npy": ["uint8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool"],
              "nifti": ["uint8", "int16", "int32", "float32", "float64"], "dicom": ["uint16", "int16"]}
SUFFIX = {"png": ".png", "tiff": ".tif", "npy": ".npy", "nifti": ".nii.gz", "dicom": ".dcm"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("hostile-files") / "run"
    threads = torch.get_num_threads()
    try:
        main(["train", "demo", "--out", str(folder), "--no-progress", *sum((["--set", t] for t in TINY), [])])
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        torch.set_num_threads(threads)
    yield folder


# --------------------------------------------------------------------------- what to write


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    fmt = draw(st.sampled_from(list(SUFFIX)))
    dtype = np.dtype(draw(st.sampled_from(INT_DTYPES[fmt])))
    name = draw(st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda s: not s.startswith((".", "-"))))
    # hypothesis starts from (and shrinks towards) the first entry: a typical size; sometimes too small
    sizes = st.sampled_from([12, *range(4, 12), *range(13, 21), 3, 1])
    h, w = draw(sizes), draw(sizes)
    channels = draw(st.sampled_from([1, 3])) if fmt in ("png", "tiff", "npy") else 1
    slices = draw(st.integers(1, 3)) if fmt in ("nifti", "dicom", "tiff", "npy") and channels == 1 else 1
    spec = {"fmt": fmt, "dtype": dtype, "name": name.strip() or "x", "shape": (slices, channels, h, w),
            "values": draw(st.sampled_from(["band", "full", "hu", "constant"] if dtype.kind in "uib"
                                           else ["scaled", "unit", "nan", "huge"])),
            "seed": draw(st.integers(0, 2**16)), "fourd": fmt == "nifti" and draw(st.booleans()) and slices > 1,
            "scale_exp": draw(st.integers(-3, 6))}
    return spec


def _values(spec: dict[str, Any]) -> np.ndarray:
    """(N, C, H, W) in the spec's dtype."""
    dtype, shape, kind = spec["dtype"], spec["shape"], spec["values"]
    rng = np.random.default_rng(spec["seed"])
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        lo, hi = max(int(info.min), -(2**31)), min(int(info.max), 2**31 - 1)
        if spec["fmt"] == "dicom":  # 12 bits stored
            lo, hi = (-2048, 2047) if dtype.kind == "i" else (0, 4095)
        if kind == "constant":
            return np.full(shape, rng.integers(lo, hi + 1), dtype)
        if kind == "band":  # e.g. 14-bit thermal counts 7000..9000 in a uint16
            base = int(rng.integers(lo, max(lo + 1, hi - 2000)))
            return rng.integers(base, min(hi, base + 2000) + 1, shape).astype(dtype)
        if kind == "hu" and lo < -1000:
            values = rng.integers(-60, 80, shape)
            values[..., : max(1, shape[-2] // 3), :] = -1000  # air
            return values.astype(dtype)
        return rng.integers(lo, hi + 1, shape).astype(dtype)
    if kind == "huge":
        return np.full(shape, 1e300 if dtype.itemsize == 8 else np.finfo(dtype).max, dtype)
    values = rng.normal(0.0, 1.0, shape) * 10.0 ** spec["scale_exp"]
    if kind == "nan":
        values.flat[0] = np.nan
    return values.astype(dtype)


def _dicom(path: Path, values: np.ndarray, seed: int) -> None:
    from pydicom.uid import CTImageStorage, generate_uid

    ds = new_instance(CTImageStorage)
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "CT" if seed % 2 else "MR"
    n, _, h, w = values.shape
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = h, w, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 1 if values.dtype.kind == "i" else 0
    ds.RescaleSlope, ds.RescaleIntercept = (1, -1024) if seed % 3 == 0 else (1, 0)
    ds.PixelSpacing = [0.5, 0.5]
    if n > 1:
        ds.NumberOfFrames = n
    ds.PixelData = np.ascontiguousarray(values[:, 0]).tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)


def _write(spec: dict[str, Any], folder: Path) -> tuple[Path, np.ndarray]:
    """The file, and its values in file units as (N, C, H, W) float64 (what the output must stay within)."""
    fmt, values = spec["fmt"], _values(spec)
    path = folder / f"{spec['name']}{SUFFIX[fmt]}"
    n, c, h, w = values.shape
    if fmt == "png":
        img = values[0, 0] if c == 1 else np.moveaxis(values[0], 0, -1)
        if values.dtype == np.uint16 and c == 3:
            _png16_rgb(path, img)
        else:
            Image.fromarray(img).save(path, format="PNG")
    elif fmt == "tiff":
        tifffile.imwrite(path, np.moveaxis(values[0], 0, -1) if c == 3 else values[:, 0] if n > 1 else values[0, 0],
                         photometric="rgb" if c == 3 else "minisblack")
    elif fmt == "npy":
        np.save(path, values[0, 0] if (n, c) == (1, 1) else values)
    elif fmt == "nifti":
        vol = np.moveaxis(values[:, 0], 0, -1)
        if spec["fourd"]:
            vol = np.stack([vol, vol], axis=-1)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    else:
        _dicom(path, values, spec["seed"])
        slope_inter = (1.0, -1024.0) if spec["seed"] % 3 == 0 else (1.0, 0.0)
        return path, values.astype(np.float64) * slope_inter[0] + slope_inter[1]
    return path, values.astype(np.float64)


def _png16_rgb(path: Path, rgb: np.ndarray) -> None:
    """Encode uint16 RGB (Pillow cannot) as a PNG with filter 0, straight from the PNG spec."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _read_png16_rgb(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB PNG whose rows all use filter 0 (what diffsr writes), from the PNG spec."""
    data, pos, idat, size = path.read_bytes(), 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    assert not rows[:, 0].any(), "a filter other than 0: extend this reader"
    return rows[:, 1:].copy().view(">u2").astype(np.uint16).reshape(h, w, 3)


def _read_output(path: Path, fmt: str, like: np.ndarray) -> np.ndarray:
    """The output in file units as (N, C, H, W) float64, read without diffsr."""
    if fmt == "png":
        with Image.open(path) as im:
            if im.mode == "RGB" and like.dtype == np.uint16:
                arr = _read_png16_rgb(path)
            else:
                arr = np.asarray(im)
        assert arr.dtype == (np.uint16 if like.dtype == np.uint16 else np.uint8), arr.dtype
        return (arr[None, None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)[None]).astype(np.float64)
    if fmt == "tiff":
        arr = tifffile.imread(path)
        assert arr.dtype == like.dtype
        n, c = like.shape[:2]
        return (np.moveaxis(arr, -1, 0)[None] if c == 3 else arr[:, None] if n > 1 else arr[None, None]).astype(
            np.float64)
    if fmt == "npy":
        arr = np.load(path)
        assert arr.dtype == like.dtype
        return (arr[None, None] if arr.ndim == 2 else arr).astype(np.float64)
    if fmt == "nifti":
        img = nib.load(path)
        assert img.get_data_dtype() == like.dtype
        return np.moveaxis(img.get_fdata(), -1, 0)[:, None]
    ds = pydicom.dcmread(next(path.iterdir()))
    pixels = ds.pixel_array.reshape(-1, 1, int(ds.Rows), int(ds.Columns)).astype(np.float64)
    return pixels * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# --------------------------------------------------------------------------- the property


class _Lines(logging.Handler):
    """Warnings a real run prints on stderr (pytest would capture them elsewhere)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@settings(max_examples=60, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=cases())
def test_every_generated_file_runs_in_its_units_or_is_one_error_line(run: Path, spec: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        path, values = _write(spec, folder)
        out = folder / "out"
        stdout, stderr, handler = io.StringIO(), io.StringIO(), _Lines()
        logging.getLogger().addHandler(handler)
        threads = torch.get_num_threads()
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    main(["sr", str(path), "--ckpt", str(run), "--out", str(out)])
                    code = 0
                except SystemExit as exc:
                    code = int(exc.code or 0)
        finally:
            logging.getLogger().removeHandler(handler)
            torch.set_num_threads(threads)
        err = stderr.getvalue()
        assert "Traceback" not in err, err
        if code == 2:
            lines = [*handler.lines, *err.strip().splitlines()]
            assert len(lines) == 1 and lines[0].startswith("error: ") and path.name in lines[0], (spec, lines)
            assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
            return
        assert code == 0, (spec, err)
        _check_units(spec, path, values, Path(stdout.getvalue().strip()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_units(spec: dict[str, Any], path: Path, values: np.ndarray, written: Path) -> None:
    fmt = spec["fmt"]
    assert written.name.startswith(path.name[: -len(SUFFIX[fmt])] + "_sr"), written
    like = _values(spec)
    sr = _read_output(written, fmt, like)
    n, c, h, w = values.shape
    assert sr.shape == (n, c, h * SCALE, w * SCALE), (sr.shape, values.shape)
    record = json.loads(written.with_name(written.name + ".json").read_text())["intensity"]
    if like.dtype.itemsize == 1 and fmt in ("png", "tiff", "npy"):  # 8-bit images: their type's range
        assert record["policy"] == "dtype" and sr.min() >= 0 and sr.max() <= 255
        return
    # wider integers, floats, CT, MRI volumes: a mapping fitted to the data, the output stays in its range
    lo, hi = float(values.min()), float(values.max())
    assert record["policy"] in ("minmax", "percentile"), record
    tol = 0.5 + 1e-6 * max(abs(lo), abs(hi)) + (1e-3 * (hi - lo) if like.dtype == np.float16 else 0.0)
    assert lo - tol <= record["lo"] <= record["hi"] <= hi + max(tol, 1.0), record
    assert sr.min() >= lo - tol and sr.max() <= hi + tol, (spec, sr.min(), sr.max(), lo, hi)
