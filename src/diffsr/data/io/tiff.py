"""TIFF: any integer or float dtype; (H, W), (H, W, 3/4), pages (N, H, W) and (N, H, W, 3/4).

Read and written with tifffile (imported inside the functions); the size of the first series is
checked before its data is read. Alpha is dropped (logged, ``meta["alpha_dropped"]``).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from diffsr.core.atomic import atomic_path
from diffsr.data.io.record import (
    NanPolicy,
    Record,
    _check_dtype,
    _check_size,
    _fail,
    _finite,
    _hw_c_to_nchw,
    _int_range,
    _one_line,
    log,
)


def _read_tiff(path: Path, nan_policy: NanPolicy) -> Record:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.series:
                _check_size(path, tuple(tif.series[0].shape))
        arr = tifffile.imread(path)
    except (tifffile.TiffFileError, OSError, EOFError, ValueError, IndexError, struct.error) as err:
        raise _fail(path, f"unreadable TIFF ({type(err).__name__}: {_one_line(err)})") from None
    arr = np.asarray(arr)
    _check_dtype(path, arr.dtype)
    meta: dict[str, Any] = {
        "format": "tiff",
        "path": str(path),
        "spacing": None,
        "dtype": str(arr.dtype),
        "bits": int(arr.dtype.itemsize * 8),
        "range": _int_range(arr.dtype),
        "mode": None,
    }
    arr = _finite(path, arr, nan_policy)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        meta["layout"] = "HWC"
        nchw = _hw_c_to_nchw(path, arr, meta)
    elif arr.ndim == 3:  # pages
        meta["layout"] = "NHW"
        nchw = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (3, 4):
        meta["layout"] = "NHWC"
        if arr.shape[-1] == 4:
            log.info("%s: dropped the alpha channel", path)
            meta["alpha_dropped"] = True
        nchw = np.moveaxis(arr[..., :3], -1, 1)
    else:
        raise _fail(path, f"unsupported TIFF shape {arr.shape} (expected (H, W), (H, W, C) or pages)")
    return Record(np.ascontiguousarray(nchw, dtype=np.float32), meta)


def _write_tiff(path: Path, data: np.ndarray) -> Path:
    import tifffile

    img = np.moveaxis(data, 1, -1)  # (N, H, W, C)
    if img.shape[-1] == 1:
        img = img[..., 0]
    if len(img) == 1:
        img = img[0]
    photometric = "rgb" if data.shape[1] == 3 else "minisblack"
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(img), photometric=photometric)
    return path
