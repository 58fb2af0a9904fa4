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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from diffsr.core.atomic import atomic_folder, atomic_path
from diffsr.core.errors import DataError
from diffsr.data.io.record import Record, _check_dtype, _check_size, _fail, _one_line, _suffix, log


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


def _numbers(ds: Any, tag: str, where: Path | str, count: int | None = None) -> list[float] | None:
    """The numbers of a DS/IS element (None when absent); DataError naming the tag when one is not a
    number (``PixelSpacing 'abc\\def'``) or when ``count`` values are expected and another number came."""
    value = getattr(ds, tag, None) if ds is not None else None
    if value is None or value == "":
        return None
    items = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        raise _fail(where, f"{tag} {'/'.join(str(v) for v in items)!r} is not numeric") from None
    if not all(np.isfinite(numbers)) or (count is not None and len(numbers) != count):
        raise _fail(where, f"{tag} {numbers} is not {count or 'a list of'} finite numbers")
    return numbers


def _number(ds: Any, tag: str, where: Path | str, default: float) -> float:
    """One DS/IS value (``default`` when absent or empty); DataError naming the tag when not numeric."""
    values = _numbers(ds, tag, where)
    return values[0] if values else default


def _first_item(ds: Any, sequence: str, item: str) -> Any:
    """``ds.<sequence>[0].<item>[0]`` (functional groups), or None."""
    outer = getattr(ds, sequence, None)
    if not outer:
        return None
    inner = getattr(outer[0], item, None)
    return inner[0] if inner else None


def _pixel_spacing(ds: Any, where: Path | str) -> list[float] | None:
    """(row, column) spacing in mm: PixelSpacing, else the enhanced multi-frame functional groups'."""
    top = _numbers(ds, "PixelSpacing", where, count=2)
    if top is not None:
        return top
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        measures = _first_item(ds, group, "PixelMeasuresSequence")
        spacing = _numbers(measures, "PixelSpacing", where, count=2)
        if spacing is not None:
            return spacing
    return None


def _slice_normal(ds: Any, where: Path | str) -> np.ndarray | None:
    iop = _numbers(ds, "ImageOrientationPatient", where, count=6)
    if iop is None:
        return None
    return np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))


#: SOP classes of non-image objects (reports, presentation states, key objects, RT structures)
_NON_IMAGE = ("SR Storage", "Presentation State", "Key Object", "Structure Set", "Document", "Waveform")


def _is_image(ds: Any) -> bool:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return False
    name = str(getattr(getattr(ds, "SOPClassUID", None), "name", ""))
    return not any(kind in name for kind in _NON_IMAGE)


def _kind(ds: Any) -> str:
    uid = getattr(ds, "SOPClassUID", None)
    return str(getattr(uid, "name", "") or uid or "object without pixel data")


def _read_dicom(path: Path) -> Record:
    files = [path] if path.is_file() else _dicom_files(path)
    if not files:
        raise _fail(path, "folder holds no DICOM files")
    files, headers = _read_headers(path, files)
    files, headers, keys, order_by = _order_slices(files, headers)
    array, rescale, stored_dtype, frames = _decode_pixels(files, headers)
    meta = _dicom_meta(path, files, headers, keys, order_by, rescale, stored_dtype)
    meta["frames"] = frames
    return Record(array, meta, headers=headers)


def _read_headers(path: Path, files: list[Path]) -> tuple[list[Path], list[Any]]:
    """(files, pydicom Datasets) of the images of one series: one size, pixel data in each.

    In a series folder, objects without pixel data (a Structured Report, a presentation state,
    a key object) are skipped with a note; a file given alone must be an image.
    """
    headers = [_dcmread(f) for f in files]
    if path.is_file():
        if not _is_image(headers[0]):
            raise _fail(path, f"DICOM file has no pixel data (a {_kind(headers[0])})")
    else:
        kept = [(f, ds) for f, ds in zip(files, headers, strict=True) if _is_image(ds)]
        skipped = [f"{f.name} (a {_kind(ds)})" for f, ds in zip(files, headers, strict=True) if not _is_image(ds)]
        if not kept:
            raise _fail(path, f"folder holds no DICOM images, only {', '.join(skipped[:3])}"
                              + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""))
        for what in skipped:
            log.warning("%s: skipped %s: not an image", path, what)
        files, headers = [f for f, _ in kept], [ds for _, ds in kept]
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in headers}
    if len(series) > 1:
        raise _fail(path, f"folder mixes {len(series)} DICOM series; put each series in its own folder")
    sizes = {(int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)) for ds in headers}
    if len(sizes) > 1:
        raise _fail(path, f"slices of different sizes {sorted(sizes)} in one series")
    return files, headers


def _order_slices(files: list[Path], headers: list[Any]) -> tuple[list[Path], list[Any], list[float], str]:
    """(files, headers, sort keys, order_by) in slice order.

    Along the slice normal when every slice has a position ("position"), else by InstanceNumber
    ("instance"), else by file name ("name"); ties broken by file name.
    """
    normal = _slice_normal(headers[0], files[0])
    positions = [_numbers(ds, "ImagePositionPatient", f, count=3) for f, ds in zip(files, headers, strict=True)]
    numbers = [_numbers(ds, "InstanceNumber", f) for f, ds in zip(files, headers, strict=True)]
    if len(headers) > 1 and normal is not None and all(p is not None for p in positions):
        keys = [float(np.dot(normal, p)) for p in positions]  # type: ignore[arg-type]
        order_by = "position"
    elif all(n for n in numbers):
        keys = [n[0] for n in numbers]  # type: ignore[index]
        order_by = "instance"
    else:
        keys = list(range(len(headers)))
        order_by = "name"
    order = sorted(range(len(headers)), key=lambda i: (keys[i], files[i].name))
    return [files[i] for i in order], [headers[i] for i in order], [keys[i] for i in order], order_by


def _decode_pixels(files: list[Path], headers: list[Any]
                   ) -> tuple[np.ndarray, list[tuple[float, float]], np.dtype, list[int]]:
    """(float32 (N, C, H, W) in file units, (slope, intercept) per file, stored dtype of the first,
    frames per file). Sizes are checked from every header before any file is decoded."""
    claimed = [int(_number(ds, "NumberOfFrames", f, 1) or 1) for f, ds in zip(files, headers, strict=True)]
    first = headers[0]
    image = (int(getattr(first, "Rows", 0) or 0), int(getattr(first, "Columns", 0) or 0),
             int(getattr(first, "SamplesPerPixel", 1) or 1))
    _check_size(files[0] if len(files) == 1 else files[0].parent, (sum(claimed), *image), image)
    slices, rescale, stored_dtypes, frames = [], [], [], []
    for f, ds in zip(files, headers, strict=True):
        slope = _number(ds, "RescaleSlope", f, 1.0)
        if slope == 0:  # invalid (every value would be the intercept): read as 1, and say so
            log.warning("%s: RescaleSlope 0 is invalid; read as 1 (values = stored + intercept)", f)
            slope = 1.0
        inter = _number(ds, "RescaleIntercept", f, 0.0)
        try:
            pixels = ds.pixel_array
        except (NotImplementedError, ValueError, RuntimeError, AttributeError, KeyError, TypeError) as err:
            # unsupported transfer syntax, missing decoder plugin, truncated or malformed pixel data
            why = f"{type(err).__name__}: {_one_line(err)}"
            raise _fail(f, f"cannot decode DICOM pixel data ({why})") from None
        _check_dtype(f, pixels.dtype)
        stored_dtypes.append(pixels.dtype)
        count = int(_number(ds, "NumberOfFrames", f, 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        if count == 1:
            pixels = pixels[None]
        if samples == 1:
            pixels = pixels[:, None]
        else:
            pixels = np.moveaxis(pixels[..., :3], -1, 1)
        frames.append(int(pixels.shape[0]))
        rescale.append((slope, inter))
        slices.append(pixels.astype(np.float64) * slope + inter)
    array = np.concatenate(slices).astype(np.float32)
    return array, rescale, np.dtype(stored_dtypes[0]), frames


def _spacing(first: Any, keys: list[float], order_by: str, where: Path | str) -> list[float] | None:
    """[row, col(, slice)] in mm from PixelSpacing (or the functional groups'); the slice step from the
    sorted positions, else SpacingBetweenSlices, else SliceThickness. None without a pixel spacing."""
    pixel_spacing = _pixel_spacing(first, where)
    if pixel_spacing is None:
        return None
    slice_spacing: float | None = None
    if order_by == "position" and len(keys) > 1:
        slice_spacing = float(np.median(np.diff(keys)))
    else:
        for tag in ("SpacingBetweenSlices", "SliceThickness"):
            value = _numbers(first, tag, where)
            if value:
                slice_spacing = value[0]
                break
    return pixel_spacing + ([slice_spacing] if slice_spacing is not None else [])


def _dicom_meta(path: Path, files: list[Path], headers: list[Any], keys: list[float], order_by: str,
                rescale: list[tuple[float, float]], stored_dtype: np.dtype) -> dict[str, Any]:
    """The record's ``meta``; ``range`` covers the stored integers through every slice's rescale."""
    first = headers[0]
    bits = int(getattr(first, "BitsStored", stored_dtype.itemsize * 8) or stored_dtype.itemsize * 8)
    signed = int(getattr(first, "PixelRepresentation", 0) or 0) == 1
    lo_s, hi_s = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = [v for s, i in rescale for v in (lo_s * s + i, hi_s * s + i)]
    spacing = _spacing(first, keys, order_by, path)
    center, width = _numbers(first, "WindowCenter", path), _numbers(first, "WindowWidth", path)
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
        "orientation": _numbers(first, "ImageOrientationPatient", path, count=6),
        "positions": [_numbers(ds, "ImagePositionPatient", path, count=3) for ds in headers],
        # the display window (VOI LUT) the file recommends: normalization 'window' uses it by default
        "window": _window(center, width),
        "order_by": order_by,
        "modality": str(getattr(first, "Modality", "")),
        "series_description": str(getattr(first, "SeriesDescription", "")),
        "layout": "series" if path.is_dir() else "file",
    }


def _window(center: list[float] | None, width: list[float] | None) -> list[float] | None:
    """[low, high] of the first WindowCenter / WindowWidth pair (None when absent or empty)."""
    if not center or not width or width[0] <= 0:
        return None
    return [center[0] - width[0] / 2, center[0] + width[0] / 2]


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    return f"{value:.10g}"


def _write_dicom(path: Path, unit: np.ndarray, to_file: Callable[[np.ndarray], np.ndarray], like: Record,
                 scale: int) -> Path:
    """Write ``unit`` (N, C, H, W) in [0, 1], mapped by ``to_file`` to file units, as a DICOM folder:
    one file per source file, each with as many frames as its source had."""
    if like.format != "dicom" or not like.headers:
        raise DataError(f"{path}: DICOM output needs a DICOM input (got {like.format})")
    n = unit.shape[0]
    headers = like.headers
    frames = list(like.meta.get("frames") or ([n] if len(headers) == 1 else [1] * len(headers)))
    if len(frames) != len(headers) or sum(frames) != n:
        raise ValueError(f"array_unit: {n} slices, but the DICOM input has {sum(frames)} frames in "
                         f"{len(headers)} file(s)")
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: DICOM output is a folder, but a file of that name exists")
    # written into a temporary sibling folder, renamed at the end: never a half-written series
    with atomic_folder(path) as tmp:
        _write_dicom_files(tmp, unit, to_file, like, scale, frames)
    return path


def _write_dicom_files(path: Path, unit: np.ndarray, to_file: Callable[[np.ndarray], np.ndarray], like: Record,
                       scale: int, frames: list[int]) -> None:
    from pydicom.uid import generate_uid

    headers = like.headers or []
    series_uid = generate_uid()
    description = f"{like.meta.get('series_description', '')} super-resolved x{scale} (diffsr)".strip()
    files = like.meta.get("files") or []
    starts = np.cumsum([0, *frames])
    names: set[str] = set()
    for index, source in enumerate(headers):
        ds = copy.deepcopy(source)
        block = unit[starts[index] : starts[index + 1]]
        _set_pixels(ds, block, to_file, multi_frame=frames[index] > 1 or "NumberOfFrames" in ds)
        _set_geometry(ds, scale)
        if "ImageType" in ds:
            image_type = list(ds.ImageType) if ds["ImageType"].VM > 1 else [str(ds.ImageType)]
            ds.ImageType = ["DERIVED", *image_type[1:]]
        ds.SeriesDescription = description[:64]
        ds.SeriesInstanceUID = series_uid
        name = Path(files[index]).name if index < len(files) else ""
        if not name or name in names:
            name = f"slice_{index:04d}.dcm"
        names.add(name)
        _save_new_instance(ds, path / name)


def _set_pixels(ds: Any, unit: np.ndarray, to_file: Callable[[np.ndarray], np.ndarray], *, multi_frame: bool) -> None:
    """``ds``'s pixel data from ``unit`` (F, C, H, W): stored through the inverse of its rescale."""
    from diffsr.data.io.record import _file_values

    f, c, h, w = unit.shape
    slope = _number(ds, "RescaleSlope", "output", 1.0) or 1.0
    if "RescaleSlope" in ds and _number(ds, "RescaleSlope", "output", 1.0) == 0:
        ds.RescaleSlope = 1  # read as 1 (see _read_files): written as what was used
    inter = _number(ds, "RescaleIntercept", "output", 0.0)
    allocated = int(getattr(ds, "BitsAllocated", 16) or 16)
    bits = int(getattr(ds, "BitsStored", allocated) or allocated)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    stored_dtype = np.dtype(f"<{'i' if signed else 'u'}{max(allocated // 8, 1)}")
    stored = _file_values(unit, lambda u: (to_file(u) - inter) / slope, stored_dtype, bounds=(lo, hi))
    pixels = stored[:, 0] if c == 1 else np.moveaxis(stored, 1, -1)  # (F, H, W[, 3])
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OW" if allocated > 8 else "OB"
    ds.Rows, ds.Columns = h, w
    if c == 3:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    if multi_frame:
        ds.NumberOfFrames = f
    for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if tag in ds:
            del ds[tag]


def _set_geometry(ds: Any, scale: int) -> None:
    """PixelSpacing / scale and the first pixel centre of the finer grid, at the top level and in the
    enhanced multi-frame functional groups (shared and per frame)."""
    _scale_plane(ds, ds, ds, scale)
    shared = (getattr(ds, "SharedFunctionalGroupsSequence", None) or [None])[0]
    shared_measures = _first_group(shared, "PixelMeasuresSequence")
    shared_orientation = _first_group(shared, "PlaneOrientationSequence")
    # positions move by a fraction of the spacing the frames had: read it before scaling
    shared_spacing = _numbers(shared_measures, "PixelSpacing", "output", count=2)
    if shared_measures is not None:
        _scale_plane(shared_measures, None, None, scale)
    for frame in getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []:
        measures = _first_group(frame, "PixelMeasuresSequence")
        own = _numbers(measures, "PixelSpacing", "output", count=2) if measures is not None else shared_spacing
        orientation = _first_group(frame, "PlaneOrientationSequence") or shared_orientation or ds
        _shift_position(_first_group(frame, "PlanePositionSequence"), orientation, own or shared_spacing, scale)
        if measures is not None:
            _scale_plane(measures, None, None, scale)


def _first_group(item: Any, sequence: str) -> Any:
    seq = getattr(item, sequence, None) if item is not None else None
    return seq[0] if seq else None


def _scale_plane(holder: Any, position: Any, orientation: Any, scale: int) -> None:
    """Divide ``holder.PixelSpacing`` by ``scale``; shift ``position.ImagePositionPatient`` to match."""
    spacing = _numbers(holder, "PixelSpacing", "output", count=2)
    if spacing is None:
        return
    holder.PixelSpacing = [_ds(spacing[0] / scale), _ds(spacing[1] / scale)]
    if position is not None:
        _shift_position(position, orientation, spacing, scale)


def _shift_position(position: Any, orientation: Any, spacing: list[float] | None, scale: int) -> None:
    """The first pixel centre moves by (0.5/s - 0.5) of an old pixel along rows and columns."""
    iop = _numbers(orientation, "ImageOrientationPatient", "output", count=6)
    ipp = _numbers(position, "ImagePositionPatient", "output", count=3)
    if spacing is None or iop is None or ipp is None or scale == 1:
        return
    shift = (0.5 / scale - 0.5) * (spacing[1] * np.asarray(iop[:3]) + spacing[0] * np.asarray(iop[3:]))
    position.ImagePositionPatient = [_ds(v) for v in np.asarray(ipp) + shift]


def _save_new_instance(ds: Any, target: Path) -> None:
    """Save ``ds`` as a new instance (new SOPInstanceUID, explicit VR little endian) atomically."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with atomic_path(target) as tmp:
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
    old_ipp = _numbers(source, "ImagePositionPatient", "the source series")
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
    _save_new_instance(ds, target)
