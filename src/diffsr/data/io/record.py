"""The :class:`Record` every reader returns, and the checks and conversions the formats share.

Every problem with an input raises :class:`~diffsr.core.errors.DataError` (:func:`_fail`) with
a one-line message that starts with the file name.
"""

from __future__ import annotations

import logging
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


def _check_size(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse a header claiming more than :data:`MAX_ELEMENTS` values (before allocating)."""
    count = 1
    for s in shape:
        count *= max(int(s), 0)
    if count > MAX_ELEMENTS:
        dims = "x".join(str(int(s)) for s in shape)
        raise _fail(path, f"image too large: the header claims {dims} = {count} values (limit {MAX_ELEMENTS})")


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise _fail(path, f"unsupported data type {dtype} (use integer or float images)")


def _int_range(dtype: np.dtype) -> tuple[float, float] | None:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def _finite(path: Path, arr: np.ndarray, nan_policy: NanPolicy) -> np.ndarray:
    if arr.dtype.kind != "f":
        return arr
    bad = ~np.isfinite(arr)
    if bad.any():
        count = int(bad.sum())
        if nan_policy != "zero":
            raise _fail(path, f"contains {count} NaN/Inf values (nan_policy='zero' replaces them with 0)")
        log.warning("%s: replaced %d NaN/Inf values with 0 (nan_policy='zero')", path, count)
        arr = np.where(bad, 0, arr)
    return arr


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
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """File-unit floats -> ``dtype``: integers rounded and clipped to the dtype's range."""
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _inverse(intensity: Intensity, unit: np.ndarray) -> np.ndarray:
    return np.asarray(intensity.inverse(unit), dtype=np.float64)
