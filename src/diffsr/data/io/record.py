"""The :class:`Record` every reader returns, and the checks and conversions the formats share.

Every problem with an input raises :class:`~diffsr.core.errors.DataError` (:func:`_fail`) with
a one-line message that starts with the file name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from diffsr.core.errors import DataError

if TYPE_CHECKING:
    from diffsr.data.normalize import Intensity

# one logger for the whole package, named as when it was one module (the CLI prints the name)
log = logging.getLogger("diffsr.data.io")

NanPolicy = Literal["error", "zero"]
#: the most values (pixels x channels x slices) a file may claim; checked from its header,
#: before anything is allocated, so a forged header cannot exhaust memory (2**30 = 4 GiB float32)
MAX_ELEMENTS = 2**30
#: the most values one 2-D image (one slice) may hold, also checked from the header before any
#: decoding: 2**27 = 134M values (11585 x 11585 grey, 6689 x 6689 RGB; 256 MiB as 16-bit). A
#: 400 KB PNG that claims 14142 x 14142 16-bit pixels (400 MB once inflated) is refused here.
MAX_IMAGE_VALUES = 2**27
#: the largest magnitude a float input may hold: diffsr computes in float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Record:
    """An image or volume as read from disk.

    array: float32 (N, C, H, W) in file units. N = 1 for a 2-D image, the number of slices for
    a volume (NIfTI, multi-page TIFF, 3-D NPY) or a DICOM series; C = 1 (grey) or 3 (RGB).
    meta: JSON-serialisable description (see docs/data.md): ``format``, ``path``, ``dtype``
    (on-disk dtype as a string), ``bits``, ``range`` (the representable range in file units
    for integer data, else None), ``mode``, ``spacing`` (row, col[, slice]) in mm or None,
    ``layout``; NIfTI adds ``affine``, ``zooms``, ``slice_axis``, ``volume_index``,
    ``shape``, ``slope``/``inter``; DICOM adds ``files``, ``rescale``, ``orientation``,
    ``positions``, ``photometric``, ``series_description``.
    headers: the file headers, kept out of ``meta`` because they are not serialisable: DICOM:
    the pydicom Datasets (one per slice, or one multi-frame dataset); NIfTI: [nibabel header].
    Writers use them (a record rebuilt from ``meta`` alone still writes NIfTI by re-reading the
    source header).
    """

    array: np.ndarray
    meta: dict[str, Any]
    headers: list[Any] | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The file or series folder this record was read from."""
        return Path(self.meta["path"])

    @property
    def format(self) -> str:
        """One of :data:`~diffsr.data.io.FORMATS`."""
        return str(self.meta["format"])

    @property
    def name(self) -> str:
        """The file (or folder) name, without a ``.nii.gz``/``.png``/... suffix."""
        return _stem(self.path)


# ----------------------------------------------------------------------------- helpers


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _fail(path: Path | str, what: object) -> DataError:
    return DataError(_one_line(f"{path}: {what}"))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _stem(path: Path) -> str:
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.name


def _check_size(path: Path, shape: tuple[int, ...], image: tuple[int, ...] | None = None) -> None:
    """Refuse a header claiming more than :data:`MAX_ELEMENTS` values in all, or more than
    :data:`MAX_IMAGE_VALUES` in one 2-D image ``image`` (default: ``shape``), or a negative size.

    Called with the sizes a header claims, before any pixel is decoded or allocated.
    """
    if any(int(s) < 0 for s in shape):
        raise _fail(path, f"invalid header: negative size {'x'.join(str(int(s)) for s in shape)}")
    for dims, limit, what in ((shape, MAX_ELEMENTS, "values"), (image or shape, MAX_IMAGE_VALUES, "values per image")):
        count = 1
        for s in dims:
            count *= max(int(s), 0)
        if count > limit:
            text = "x".join(str(int(s)) for s in dims)
            raise _fail(path, f"image too large: the header claims {text} = {count} {what} (limit {limit}); "
                              "nothing was decoded")


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise _fail(path, f"unsupported data type {dtype} (use integer or float images)")


def _int_range(dtype: np.dtype) -> tuple[float, float] | None:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def _finite(path: Path, arr: np.ndarray, nan_policy: NanPolicy) -> np.ndarray:
    """``arr`` checked for NaN/Inf (error, or replaced by 0 under nan_policy 'zero') and for float
    values beyond float32 (1e300 in a float64 file: an error, they cannot be computed with)."""
    if arr.dtype.kind != "f":
        return arr
    bad = ~np.isfinite(arr)
    if bad.any():
        count = int(bad.sum())
        if nan_policy != "zero":
            raise _fail(path, f"contains {count} NaN/Inf values (nan_policy='zero' replaces them with 0)")
        log.warning("%s: replaced %d NaN/Inf values with 0 (nan_policy='zero')", path, count)
        arr = np.where(bad, 0, arr)
    if arr.dtype.itemsize > 4 and arr.size:
        peak = float(np.abs(arr).max())
        if peak > FLOAT32_MAX:
            raise _fail(path, f"values up to {peak:.3g} exceed the float32 range (+-{FLOAT32_MAX:.3g}) "
                              "diffsr computes in; rescale the data")
    return arr


def _check_regular(path: Path) -> None:
    """DataError unless ``path`` is a regular file (not a FIFO, device, socket or /dev/stdin pipe)."""
    if not path.is_file():
        import stat

        mode = path.stat().st_mode
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise _fail(path, f"is {kind}; give an image file or a folder")


def _hw_c_to_nchw(path: Path, arr: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """(H, W) or (H, W, C) with C in 1..4 -> (1, C', H, W); alpha dropped with a note."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    c = arr.shape[-1]
    if c in (2, 4):
        log.info("%s: dropped the alpha channel", path)
        meta["alpha_dropped"] = True
        arr = arr[..., : c - 1]
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0)[None])


# ----------------------------------------------------------------------------- writers


def _to_numpy(array: Any) -> np.ndarray:
    """A float32 numpy view of ``array`` (a tensor or array); copied only when it is not float32."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float32)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """File-unit floats -> ``dtype``: integers rounded and clipped to the dtype's range."""
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


#: rows converted at a time by :func:`_file_values` (bounds its float64 working memory)
_BLOCK_VALUES = 1 << 18


def _file_values(unit: np.ndarray, to_file: Callable[[np.ndarray], np.ndarray], dtype: np.dtype,
                 bounds: tuple[float, float] | None = None) -> np.ndarray:
    """``unit`` (N, C, H, W) in [0, 1] -> ``dtype`` through ``to_file`` (float64 [0, 1] -> float64
    file units), a block of rows at a time: the whole image is never copied to float64, so writing
    a 12288 x 12800 output needs the output in its own dtype plus a block, not 4 float64 copies.

    Integers are rounded and clipped to ``bounds`` (default: the dtype's range).
    """
    out = np.empty(unit.shape, dtype=dtype)
    n, c, h, w = unit.shape
    rows = max(1, _BLOCK_VALUES // max(1, c * w))
    for i in range(n):
        for r0 in range(0, h, rows):
            block = np.clip(unit[i, :, r0 : r0 + rows].astype(np.float64), 0.0, 1.0)
            values = to_file(block)
            if dtype.kind in "ui":
                info = np.iinfo(dtype)
                lo, hi = bounds if bounds is not None else (info.min, info.max)
                values = np.clip(np.rint(values), max(lo, info.min), min(hi, info.max))
            out[i, :, r0 : r0 + rows] = values
    return out


def _inverse(intensity: Intensity) -> Callable[[np.ndarray], np.ndarray]:
    """[0, 1] -> file units under ``intensity``, in float64."""
    return lambda unit: np.asarray(intensity.inverse(unit), dtype=np.float64)
