"""DICOM: a file (.dcm, .dicom, or no suffix with the DICM preamble) or a folder holding one series.

Read with pydicom (imported inside the functions); RescaleSlope/Intercept applied per slice; a
multi-frame file gives N frames. A series needs one SeriesInstanceUID and one size; it is sorted
along the slice normal when every slice has a position, else by InstanceNumber, else by file
name; the slice spacing is the median step of the sorted positions, else SpacingBetweenSlices,
else SliceThickness. ``meta`` adds ``files``, ``rescale``, ``signed``, ``orientation``,
``positions``, ``order_by``, ``photometric``, ``modality``, ``series_description``.

Writing needs a DICOM source: a folder with one file per slice (or one multi-frame file), each
header a copy of its source slice with new UIDs, the output size, PixelSpacing / scale, the
ImagePositionPatient of the finer grid, and values inverse-rescaled to stored units.
:func:`write_dicom_volume` writes a volume on any voxel grid as a new series (``diffsr iso``).
"""

from __future__ import annotations

import copy
import struct
from pathlib import Path
from typing import Any

import numpy as np

from diffsr.core.atomic import atomic_folder, atomic_path
from diffsr.core.errors import DataError
from diffsr.data.io.record import Record, _check_dtype, _check_size, _fail, _one_line, _suffix


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _is_dicom_file(path: Path) -> bool:
    if not path.is_file() or path.name.startswith(".") or path.name.upper() == "DICOMDIR":
        return False
    if _suffix(path) in (".dcm", ".dicom"):
        return True
    return _suffix(path) == "" and _has_dicom_preamble(path)


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_dicom_file(p))


def _dcmread(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise _fail(path, "not a DICOM file") from None
    except (OSError, EOFError, ValueError, struct.error) as err:
        raise _fail(path, f"unreadable DICOM ({_one_line(err)})") from None


def _float_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    return [float(v) for v in value]


def _slice_normal(ds: Any) -> np.ndarray | None:
    iop = _float_list(getattr(ds, "ImageOrientationPatient", None))
    if iop is None or len(iop) != 6:
        return None
    return np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))


def _read_dicom(path: Path) -> Record:
    files = [path] if path.is_file() else _dicom_files(path)
    if not files:
        raise _fail(path, "folder holds no DICOM files")
    headers = _read_headers(path, files)
    files, headers, keys, order_by = _order_slices(files, headers)
    array, rescale, stored_dtype = _decode_pixels(files, headers)
    meta = _dicom_meta(path, files, headers, keys, order_by, rescale, stored_dtype)
    return Record(array, meta, headers=headers)


def _read_headers(path: Path, files: list[Path]) -> list[Any]:
    """The pydicom Datasets of ``files``: each with pixel data, one series, one size."""
    headers = [_dcmread(f) for f in files]
    for f, ds in zip(files, headers, strict=True):
        if "PixelData" not in ds:
            raise _fail(f, "DICOM file has no pixel data")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in headers}
    if len(series) > 1:
        raise _fail(path, f"folder mixes {len(series)} DICOM series; put each series in its own folder")
    sizes = {(int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))) for ds in headers}
    if len(sizes) > 1:
        raise _fail(path, f"slices of different sizes {sorted(sizes)} in one series")
    return headers


def _order_slices(files: list[Path], headers: list[Any]) -> tuple[list[Path], list[Any], list[float], str]:
    """(files, headers, sort keys, order_by) in slice order.

    Along the slice normal when every slice has a position ("position"), else by InstanceNumber
    ("instance"), else by file name ("name"); ties broken by file name.
    """
    normal = _slice_normal(headers[0])
    positions = [_float_list(getattr(ds, "ImagePositionPatient", None)) for ds in headers]
    if len(headers) > 1 and normal is not None and all(p is not None and len(p) == 3 for p in positions):
        keys = [float(np.dot(normal, p)) for p in positions]
        order_by = "position"
    elif all("InstanceNumber" in ds for ds in headers):
        keys = [float(ds.InstanceNumber) for ds in headers]
        order_by = "instance"
    else:
        keys = list(range(len(headers)))
        order_by = "name"
    order = sorted(range(len(headers)), key=lambda i: (keys[i], files[i].name))
    return [files[i] for i in order], [headers[i] for i in order], [keys[i] for i in order], order_by


def _decode_pixels(files: list[Path], headers: list[Any]) -> tuple[np.ndarray, list[tuple[float, float]], np.dtype]:
    """(float32 (N, C, H, W) in file units, (slope, intercept) per file, stored dtype of the first)."""
    slices, rescale, stored_dtypes = [], [], []
    for f, ds in zip(files, headers, strict=True):
        frames_claimed = int(getattr(ds, "NumberOfFrames", 1) or 1)
        _check_size(f, (frames_claimed, int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0)),
                        int(getattr(ds, "SamplesPerPixel", 1) or 1)))
        try:
            pixels = ds.pixel_array
        except (NotImplementedError, ValueError, RuntimeError, AttributeError, KeyError) as err:
            # unsupported transfer syntax, missing decoder plugin, truncated or malformed pixel data
            why = f"{type(err).__name__}: {_one_line(err)}"
            raise _fail(f, f"cannot decode DICOM pixel data ({why})") from None
        _check_dtype(f, pixels.dtype)
        stored_dtypes.append(pixels.dtype)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1))
        if frames == 1:
            pixels = pixels[None]
        if samples == 1:
            pixels = pixels[:, None]
        else:
            pixels = np.moveaxis(pixels[..., :3], -1, 1)
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        inter = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        rescale.append((slope, inter))
        slices.append(pixels.astype(np.float64) * slope + inter)
    array = np.concatenate(slices).astype(np.float32)
    return array, rescale, np.dtype(stored_dtypes[0])


def _spacing(first: Any, keys: list[float], order_by: str) -> list[float] | None:
    """[row, col(, slice)] in mm from PixelSpacing; the slice step from the sorted positions,
    else SpacingBetweenSlices, else SliceThickness. None without PixelSpacing."""
    pixel_spacing = _float_list(getattr(first, "PixelSpacing", None))
    if pixel_spacing is None or len(pixel_spacing) != 2:
        return None
    slice_spacing: float | None = None
    if order_by == "position" and len(keys) > 1:
        slice_spacing = float(np.median(np.diff(keys)))
    elif "SpacingBetweenSlices" in first:
        slice_spacing = float(first.SpacingBetweenSlices)
    elif "SliceThickness" in first:
        slice_spacing = float(first.SliceThickness)
    return pixel_spacing + ([slice_spacing] if slice_spacing is not None else [])


def _dicom_meta(path: Path, files: list[Path], headers: list[Any], keys: list[float], order_by: str,
                rescale: list[tuple[float, float]], stored_dtype: np.dtype) -> dict[str, Any]:
    """The record's ``meta``; ``range`` covers the stored integers through every slice's rescale."""
    first = headers[0]
    bits = int(getattr(first, "BitsStored", stored_dtype.itemsize * 8))
    signed = int(getattr(first, "PixelRepresentation", 0)) == 1
    lo_s, hi_s = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = [v for s, i in rescale for v in (lo_s * s + i, hi_s * s + i)]
    spacing = _spacing(first, keys, order_by)
    return {
        "format": "dicom",
        "path": str(path),
        "files": [str(f) for f in files],
        "dtype": str(stored_dtype),
        "bits": bits,
        "signed": signed,
        "range": (float(min(ends)), float(max(ends))),
        "mode": str(getattr(first, "PhotometricInterpretation", "")),
        "photometric": str(getattr(first, "PhotometricInterpretation", "")),
        "rescale": rescale,
        "spacing": spacing,
        "orientation": _float_list(getattr(first, "ImageOrientationPatient", None)),
        "positions": [_float_list(getattr(ds, "ImagePositionPatient", None)) for ds in headers],
        "order_by": order_by,
        "modality": str(getattr(first, "Modality", "")),
        "series_description": str(getattr(first, "SeriesDescription", "")),
        "layout": "series" if path.is_dir() else "file",
    }


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    return f"{value:.10g}"


def _write_dicom(path: Path, values: np.ndarray, like: Record, scale: int) -> Path:
    if like.format != "dicom" or not like.headers:
        raise DataError(f"{path}: DICOM output needs a DICOM input (got {like.format})")
    n = values.shape[0]
    headers = like.headers
    multi_frame = len(headers) == 1 and n > 1
    if not multi_frame and len(headers) != n:
        raise ValueError(f"array_unit: {n} slices, but the DICOM input has {len(headers)}")
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: DICOM output is a folder, but a file of that name exists")
    # written into a temporary sibling folder, renamed at the end: never a half-written series
    with atomic_folder(path) as tmp:
        _write_dicom_files(tmp, values, like, scale, multi_frame)
    return path


def _write_dicom_files(path: Path, values: np.ndarray, like: Record, scale: int, multi_frame: bool) -> None:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    n, c, h, w = values.shape
    headers = like.headers or []
    series_uid = generate_uid()
    description = f"{like.meta.get('series_description', '')} super-resolved x{scale} (diffsr)".strip()
    files = like.meta.get("files") or []
    groups = [(headers[0], values)] if multi_frame else [(headers[i], values[i : i + 1]) for i in range(n)]
    names: set[str] = set()
    for index, (source, vals) in enumerate(groups):
        ds = copy.deepcopy(source)
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        inter = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        allocated = int(getattr(ds, "BitsAllocated", 16))
        bits = int(getattr(ds, "BitsStored", allocated))
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        stored_dtype = np.dtype(f"<{'i' if signed else 'u'}{max(allocated // 8, 1)}")
        stored = np.clip(np.rint((vals - inter) / slope), lo, hi).astype(stored_dtype)
        frames = stored[:, 0] if c == 1 else np.moveaxis(stored, 1, -1)  # (F, H, W[, 3])
        ds.PixelData = np.ascontiguousarray(frames).tobytes()
        ds["PixelData"].VR = "OW" if allocated > 8 else "OB"
        ds.Rows, ds.Columns = h, w
        if c == 3:
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        if multi_frame:
            ds.NumberOfFrames = n
        for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if tag in ds:
                del ds[tag]
        spacing = _float_list(getattr(ds, "PixelSpacing", None))
        if spacing is not None and len(spacing) == 2:
            ds.PixelSpacing = [_ds(spacing[0] / scale), _ds(spacing[1] / scale)]
            iop = _float_list(getattr(ds, "ImageOrientationPatient", None))
            ipp = _float_list(getattr(ds, "ImagePositionPatient", None))
            if iop is not None and ipp is not None and len(iop) == 6 and len(ipp) == 3 and scale != 1:
                # first pixel centre moves by (0.5/s - 0.5) of an old pixel along rows and columns
                shift = (0.5 / scale - 0.5) * (
                    spacing[1] * np.asarray(iop[:3]) + spacing[0] * np.asarray(iop[3:])
                )
                ds.ImagePositionPatient = [_ds(v) for v in np.asarray(ipp) + shift]
        if "ImageType" in ds:
            image_type = list(ds.ImageType) if ds["ImageType"].VM > 1 else [str(ds.ImageType)]
            ds.ImageType = ["DERIVED", *image_type[1:]]
        ds.SeriesDescription = description[:64]
        ds.SeriesInstanceUID = series_uid
        sop_uid = generate_uid()
        ds.SOPInstanceUID = sop_uid
        if not hasattr(ds, "file_meta") or ds.file_meta is None:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = Path(files[index]).name if index < len(files) else ""
        if not name or name in names:
            name = f"slice_{index:04d}.dcm"
        names.add(name)
        with atomic_path(path / name) as tmp:
            _save_dicom(ds, tmp)


def _save_dicom(ds: Any, target: Path) -> None:
    import pydicom

    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(target, implicit_vr=False, little_endian=True, enforce_file_format=True)
    else:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(target, write_like_original=False)


def write_dicom_volume(path: Path, values: np.ndarray, like: Record, affine: np.ndarray, *,
                       description: str = "resampled (diffsr)") -> Path:
    """Write a volume (N, rows, cols) in file units as a new DICOM series on the grid ``affine``.

    ``affine`` maps (slice, row, column) indices to patient coordinates (mm, DICOM LPS): column
    0 is the step between slices, columns 1 and 2 the steps down the rows and along the
    columns. Slice j gets ImagePositionPatient ``affine @ (j, 0, 0, 1)``, PixelSpacing from the
    in-plane columns, SliceThickness and SpacingBetweenSlices = the slice step, InstanceNumber
    j + 1, SliceLocation moved with the position, and a copy of the header of the source slice
    nearest to it (new SOP and series UIDs, ImageType DERIVED, ``description`` appended to the
    SeriesDescription; values inverse-rescaled to stored units). ``path`` is a folder, written
    atomically.
    """
    from pydicom.uid import generate_uid

    if like.format != "dicom" or not like.headers or len(like.headers) < 2:
        raise DataError(f"{path}: a DICOM volume output needs a DICOM series input (got {like.format})")
    if values.ndim != 3:
        raise ValueError(f"values: expected (N, rows, cols), got {values.shape}")
    affine = np.asarray(affine, dtype=float)
    positions = np.asarray([p if p is not None else [np.nan] * 3 for p in like.meta.get("positions") or []])
    step = np.linalg.norm(affine[:3, 0])
    source_description = str(like.meta.get("series_description", ""))
    state = {"series": generate_uid(), "description": f"{source_description} {description}".strip()[:64]}
    with atomic_folder(path) as tmp:
        for j in range(values.shape[0]):
            ipp = affine[:3, :3] @ np.array([j, 0.0, 0.0]) + affine[:3, 3]
            source = _nearest_slice(like, positions, ipp)
            _write_volume_slice(tmp / f"slice_{j + 1:04d}.dcm", values[j], source, affine, ipp, step, j, state)
    return path


def _nearest_slice(like: Record, positions: np.ndarray, ipp: np.ndarray) -> Any:
    """The header of the source slice whose position is nearest to ``ipp`` (the first without positions)."""
    headers = like.headers or []
    if positions.shape[0] != len(headers) or not np.isfinite(positions).all():
        return headers[0]
    return headers[int(np.argmin(np.linalg.norm(positions - ipp[None, :], axis=1)))]


def _write_volume_slice(target: Path, pixels: np.ndarray, source: Any, affine: np.ndarray, ipp: np.ndarray,
                        step: float, index: int, state: dict[str, Any]) -> None:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = copy.deepcopy(source)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    inter = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    allocated = int(getattr(ds, "BitsAllocated", 16))
    bits = int(getattr(ds, "BitsStored", allocated))
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    stored_dtype = np.dtype(f"<{'i' if signed else 'u'}{max(allocated // 8, 1)}")
    stored = np.clip(np.rint((pixels - inter) / slope), lo, hi).astype(stored_dtype)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds["PixelData"].VR = "OW" if allocated > 8 else "OB"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if tag in ds:
            del ds[tag]
    row_step, col_step = np.linalg.norm(affine[:3, 1]), np.linalg.norm(affine[:3, 2])
    ds.PixelSpacing = [_ds(row_step), _ds(col_step)]
    ds.ImageOrientationPatient = [_ds(v) for v in (*(affine[:3, 2] / col_step), *(affine[:3, 1] / row_step))]
    old_ipp = _float_list(getattr(source, "ImagePositionPatient", None))
    ds.ImagePositionPatient = [_ds(v) for v in ipp]
    if "SliceLocation" in ds and old_ipp is not None and len(old_ipp) == 3:
        normal = np.cross(affine[:3, 2] / col_step, affine[:3, 1] / row_step)
        ds.SliceLocation = _ds(float(ds.SliceLocation) + float(np.dot(normal, ipp - np.asarray(old_ipp))))
    ds.SliceThickness = _ds(step)
    ds.SpacingBetweenSlices = _ds(step)
    ds.InstanceNumber = index + 1
    if "ImageType" in ds:
        image_type = list(ds.ImageType) if ds["ImageType"].VM > 1 else [str(ds.ImageType)]
        ds.ImageType = ["DERIVED", *image_type[1:]]
    ds.SeriesDescription = state["description"]
    ds.SeriesInstanceUID = state["series"]
    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with atomic_path(target) as tmp:
        _save_dicom(ds, tmp)
