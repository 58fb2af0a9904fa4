"""NPY: ``np.load(allow_pickle=False)``, the header checked before the data is read.

Layouts: (H, W); (C, H, W) when the first axis is 1 or 3; (H, W, C) when the last is 3 or 4
(and the first is not 1 or 3); otherwise a 3-D array is (N, H, W) slices; (N, C, H, W) with
C = 1 or 3. ``meta["layout"]`` records which, and the writer restores it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffsr.core.atomic import atomic_path
from diffsr.data.io.record import NanPolicy, Record, _check_dtype, _check_size, _fail, _finite, _int_range, _one_line


def _check_npy_header(path: Path) -> None:
    """Refuse a .npy whose header claims too many values or more bytes than the file holds."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise _fail(path, f"unsupported or unreadable .npy ({_one_line(err)})") from None
    shape = tuple(int(n) for n in shape)
    _check_size(path, shape, _npy_image(shape))
    if not dtype.hasobject:
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        have = path.stat().st_size - offset
        if have < need:
            raise _fail(path, f"truncated .npy: the header claims {need} bytes of data, the file holds {have}")


def _npy_image(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The dimensions of one 2-D image of an array of ``shape`` (see :func:`_read_npy` for the layouts)."""
    if len(shape) == 3 and shape[0] not in (1, 3) and shape[-1] not in (3, 4):
        return shape[1:]  # (N, H, W) slices
    if len(shape) == 4:
        return shape[1:]  # (N, C, H, W)
    return shape


def _read_npy(path: Path, nan_policy: NanPolicy) -> Record:
    """(H, W); (C, H, W) if C in {1, 3}; (H, W, C) if C in {3, 4}; else (N, H, W); (N, C, H, W)."""
    _check_npy_header(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise _fail(path, f"unsupported or unreadable .npy ({_one_line(err)})") from None
    except (OSError, EOFError) as err:
        raise _fail(path, f"unreadable .npy ({_one_line(err)})") from None
    if not isinstance(arr, np.ndarray):
        raise _fail(path, "not a single .npy array")
    _check_dtype(path, arr.dtype)
    if arr.ndim == 2:
        layout, nchw = "HW", arr[None, None]
    elif arr.ndim == 3 and arr.shape[0] in (1, 3):
        layout, nchw = "CHW", arr[None]
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        layout, nchw = "HWC", np.moveaxis(arr[..., :3], -1, 0)[None]
    elif arr.ndim == 3:
        layout, nchw = "NHW", arr[:, None]
    elif arr.ndim == 4 and arr.shape[1] in (1, 3):
        layout, nchw = "NCHW", arr
    else:
        raise _fail(
            path,
            f"unsupported array shape {arr.shape} (expected (H, W), (C, H, W), (H, W, C), (N, H, W) "
            "or (N, C, H, W) with C = 1 or 3)",
        )
    meta = {
        "format": "npy",
        "path": str(path),
        "spacing": None,
        "dtype": str(arr.dtype),
        "bits": int(arr.dtype.itemsize * 8),
        "range": _int_range(arr.dtype),
        "mode": None,
        "layout": layout,
    }
    nchw = _finite(path, nchw, nan_policy)
    return Record(np.ascontiguousarray(nchw, dtype=np.float32), meta)


def _write_npy(path: Path, data: np.ndarray, like: Record) -> Path:
    layout = like.meta.get("layout") if like.format == "npy" else "NCHW"
    n, c = data.shape[:2]
    if layout == "HW" and n == 1 and c == 1:
        out = data[0, 0]
    elif layout == "CHW" and n == 1:
        out = data[0]
    elif layout == "HWC" and n == 1:
        out = np.moveaxis(data[0], 0, -1)
    elif layout == "NHW" and c == 1:
        out = data[:, 0]
    else:
        out = data
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(out))
    return path
