"""Image readers and writers: PNG, TIFF, NPY, DICOM (file or series folder) and NIfTI.

Every reader returns a :class:`Record`: a float32 array ``(N, C, H, W)`` in *file units*
(the numbers the file means: PNG/TIFF grey levels, DICOM values after RescaleSlope/Intercept,
NIfTI values after ``scl_slope``/``scl_inter``) plus ``meta``, a JSON-serialisable dict saying
where the numbers came from (format, on-disk dtype, bit depth, spacing, affine, ...). ``N`` is
1 for a 2-D image and the number of slices for a volume or a DICOM series; ``C`` is 1 or 3.
Normalisation to [0, 1] is a separate step (:mod:`diffsr.data.normalize`) and is recorded so
that :func:`write` can map a result back to the input's units, dtype and geometry.

Every problem with an input raises :class:`~diffsr.core.errors.DataError` with a one-line
message that starts with the file name. pydicom, nibabel and tifffile are imported inside the
functions that need them.

Each format is one module holding its reader and writer (:mod:`.png`, :mod:`.tiff`, :mod:`.npy`,
:mod:`.dicom`, :mod:`.nifti`); :mod:`.record` holds :class:`Record` and the checks they share.
:func:`read` and :func:`write` pick the module.

See docs/data.md for the full description of each format and the metadata kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# the imports marked F401 are re-exports, unused here: code and tests import them from
# diffsr.data.io, which was one module before each format got its own
from diffsr.core.errors import DataError
from diffsr.data.io.dicom import _dicom_files, _has_dicom_preamble, _is_dicom_file, _read_dicom, _write_dicom
from diffsr.data.io.nifti import _read_nifti, _write_nifti
from diffsr.data.io.npy import _read_npy, _write_npy
from diffsr.data.io.png import _png16_read, _png16_write, _read_png, _write_png, _write_png_file  # noqa: F401
from diffsr.data.io.record import (
    MAX_ELEMENTS,
    MAX_IMAGE_VALUES,
    NanPolicy,
    Record,
    _cast,  # noqa: F401
    _check_regular,
    _fail,
    _file_values,
    _inverse,
    _stem,  # noqa: F401
    _suffix,
    _to_numpy,
    log,
)
from diffsr.data.io.tiff import _read_tiff, _write_tiff

if TYPE_CHECKING:
    from diffsr.data.normalize import Intensity

#: file suffixes recognised as images by :func:`list_inputs` (lower case)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".nii", ".nii.gz", ".dcm", ".dicom")
#: formats :func:`read` and :func:`write` understand
FORMATS = ("png", "tiff", "npy", "dicom", "nifti")

_SUFFIX_FORMAT = {
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "npy",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".dcm": "dicom",
    ".dicom": "dicom",
}

_FORMAT_SUFFIX = {"png": ".png", "tiff": ".tif", "npy": ".npy", "nifti": ".nii.gz", "dicom": ""}


def format_of(path: str | Path) -> str | None:
    """The format :func:`read` would use for ``path`` (a folder of DICOM slices is "dicom")."""
    path = Path(path)
    if path.is_dir():
        return "dicom" if _dicom_files(path) else None
    fmt = _SUFFIX_FORMAT.get(_suffix(path))
    if fmt is None and _suffix(path) == "" and _has_dicom_preamble(path):
        return "dicom"
    return fmt


# ----------------------------------------------------------------------------- public read


def read(
    path: str | Path,
    *,
    volume_index: int | None = None,
    slice_axis: int = 2,
    nan_policy: NanPolicy = "error",
) -> Record:
    """Read an image, volume or DICOM series into a :class:`Record` (float32 (N, C, H, W), file units).

    path: a .png/.tif/.tiff/.npy/.nii/.nii.gz/.dcm file, or a folder of DICOM slices (one series).
    volume_index: which volume of a 4-D NIfTI (an error when out of range). None: the file must
    hold one volume; a 4-D NIfTI with several is an error that asks for it (never "volume 0").
    slice_axis: the NIfTI axis whose slices become the N 2-D images; H and W are the two other
    axes in file order (no reorientation).
    nan_policy: "error" (DataError on NaN/Inf in float data) or "zero" (replace with 0, logged).
    Raises DataError (one line, starting with the path) for anything unreadable or unsupported.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "no such file or folder")
    if path.is_dir():
        if not _dicom_files(path):
            raise _fail(path, "folder holds no DICOM files (use list_inputs for a folder of images)")
        return _read_dicom(path)
    _check_regular(path)
    fmt = format_of(path)
    if fmt is None:
        raise _fail(path, f"unknown image format '{_suffix(path) or path.name}' (use {', '.join(FORMATS)})")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file")
    if fmt == "png":
        record = _read_png(path)
    elif fmt == "tiff":
        record = _read_tiff(path, nan_policy)
    elif fmt == "npy":
        record = _read_npy(path, nan_policy)
    elif fmt == "dicom":
        record = _read_dicom(path)
    else:
        record = _read_nifti(path, volume_index, slice_axis, nan_policy)
    n, c, h, w = record.array.shape
    if min(n, c, h, w) == 0:
        raise _fail(path, f"empty image ({n}x{c}x{h}x{w})")
    if c not in (1, 3):
        raise _fail(path, f"{c} channels (expected 1 or 3)")
    return record


def list_inputs(path: str | Path) -> list[Path]:
    """The inputs under ``path``: a file -> [file]; a folder -> its image files, sorted.

    A folder whose files are DICOM slices is one input (the series: [folder]); a folder of
    images also lists its immediate sub-folders that hold DICOM series. Hidden files are
    skipped. Raises DataError when nothing is found.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "no such file or folder")
    if not path.is_dir():
        _check_regular(path)  # a FIFO, a device, /dev/stdin: one line, not an attempt to list it
        return [path]
    try:
        entries = list(path.iterdir())
    except OSError as err:
        raise _fail(path, f"cannot list the folder ({err.strerror or type(err).__name__})") from None
    # FIFOs, devices and sockets in a folder are not images: skipped like other non-image files
    files = sorted(p for p in entries if p.is_file() and not p.name.startswith("."))
    dicoms = [p for p in files if _is_dicom_file(p)]
    images = [p for p in files if _suffix(p) in _SUFFIX_FORMAT and p not in dicoms]
    found: list[Path] = [path] if dicoms else []
    found += images
    folders = (d for d in entries if d.is_dir() and not d.name.startswith("."))
    found += sorted(d for d in folders if _dicom_files(d))
    if not found:
        raise _fail(path, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM series)")
    return found


# ----------------------------------------------------------------------------- writers


def write(
    path: str | Path,
    array_unit: np.ndarray,
    *,
    like: Record,
    intensity: Intensity,
    scale: int = 1,
    fmt: str | None = None,
) -> Path:
    """Write ``array_unit`` (N, C, H, W) in [0, 1] in the format, units and dtype of ``like``.

    Values map back to file units with ``intensity.inverse``, then to the on-disk dtype of
    ``like`` (integers rounded and clipped to the dtype's range, through the inverse of the NIfTI
    ``scl_slope``/``scl_inter`` or the DICOM RescaleSlope/Intercept; float stays float).
    ``scale``: how much finer the written grid is than ``like``'s: NIfTI/DICOM spacing is
    divided by it in-plane and the origin moved so that the field of view is unchanged (pixel
    centres follow the align_corners=False convention). ``array_unit`` may be a tensor.
    fmt: "png" | "tiff" | "npy" | "nifti" | "dicom" (default ``like``'s format).
    - DICOM (needs a DICOM ``like``): ``path`` is a folder, one file per slice (or one
      multi-frame file), headers kept with new UIDs (see docs/data.md).
    - PNG with N > 1: a folder ``path`` (suffix removed) of per-slice PNGs.
    - PNG from a source that is not 8/16-bit: the [0, 1] values as 16-bit (logged).
    Every file is written to a temporary name and renamed. Returns the path written.
    """
    path = Path(path)
    fmt = fmt or like.format
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown output format '{fmt}' (use {', '.join(FORMATS)})")
    unit = _to_numpy(array_unit)
    if unit.ndim != 4 or unit.shape[1] not in (1, 3):
        raise ValueError(f"array_unit: expected (N, C, H, W) with C = 1 or 3, got {unit.shape}")
    if scale < 1:
        raise ValueError(f"scale: expected >= 1, got {scale}")
    dtype = np.dtype(like.meta.get("dtype", "float32"))
    if fmt == "png":
        if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            log.info("%s: %s source written as a 16-bit PNG of the [0, 1] image", path, dtype)
            return _write_png(path, _file_values(unit, lambda u: u * 65535.0, np.dtype(np.uint16)))
        return _write_png(path, _file_values(unit, _inverse(intensity), dtype))
    if fmt == "tiff":
        return _write_tiff(path, _file_values(unit, _inverse(intensity), dtype), like)
    if fmt == "npy":
        return _write_npy(path, _file_values(unit, _inverse(intensity), dtype), like)
    if fmt == "nifti":
        return _write_nifti(path, unit, _inverse(intensity), like, scale)
    return _write_dicom(path, unit, _inverse(intensity), like, scale)


__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "MAX_ELEMENTS",
    "MAX_IMAGE_VALUES",
    "NanPolicy",
    "Record",
    "format_of",
    "list_inputs",
    "read",
    "write",
]
