"""TIFF: any integer or float dtype; (H, W), (H, W, 3/4), pages (N, H, W) and (N, H, W, 3/4).

Read and written with tifffile (imported inside the functions); the size of the first series is
checked before its data is read. Alpha is dropped (logged, ``meta["alpha_dropped"]``). Planar
(separate) RGB is read as RGB, a palette image as the RGB of its colour map, MINISWHITE grey
as stored (and written back MINISWHITE). CMYK (photometric 'separated') and other colour
spaces are refused: they are never read as RGBA or grey.
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

#: photometric interpretations read as they are (grey, inverted grey, RGB); PALETTE is expanded
_PHOTOMETRIC_OK = ("MINISBLACK", "MINISWHITE", "RGB")


def _tiff_header(path: Path) -> tuple[tuple[int, ...], str, str, Any]:
    """(shape, axes, photometric name, colormap or None) of the first series, checked before any pixel is read."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise _fail(path, "TIFF without images")
        series = tif.series[0]
        shape, axes = tuple(int(n) for n in series.shape), str(series.axes)
        if len(tif.series) > 1:  # pages of another size (a thumbnail, a second image): not read
            others = ", ".join("x".join(str(n) for n in s.shape) for s in tif.series[1:4])
            log.warning("%s: %d image series; reading the first (%s), ignoring the other(s) (%s%s)", path,
                        len(tif.series), "x".join(str(n) for n in shape), others,
                        ", ..." if len(tif.series) > 4 else "")
        page = tif.pages[0]
        photometric = getattr(page.photometric, "name", str(page.photometric))
        compression = getattr(page.compression, "name", str(page.compression))
        if photometric == "YCBCR" and "JPEG" in compression:  # the JPEG codec gives RGB
            photometric = "RGB"
        colormap = page.colormap if photometric == "PALETTE" else None
    image = tuple(n for n, a in zip(shape, axes, strict=False) if a in "YXS")
    _check_size(path, shape, image or shape)
    if photometric == "SEPARATED":
        raise _fail(path, "CMYK TIFF (photometric 'separated') is not supported: diffsr would have to guess the "
                          "ink profile; convert it to RGB first (e.g. with an ICC-aware tool)")
    if photometric not in (*_PHOTOMETRIC_OK, "PALETTE"):
        raise _fail(path, f"TIFF photometric '{photometric.lower()}' is not supported (use grey, RGB or palette)")
    return shape, axes, photometric, colormap


def _read_tiff(path: Path, nan_policy: NanPolicy) -> Record:
    import tifffile

    try:
        _, axes, photometric, colormap = _tiff_header(path)
        arr = tifffile.imread(path)
    except (tifffile.TiffFileError, OSError, EOFError, ValueError, IndexError, KeyError, struct.error) as err:
        raise _fail(path, f"unreadable TIFF ({type(err).__name__}: {_one_line(err)})") from None
    arr = np.asarray(arr)
    if "S" in axes and arr.ndim == len(axes) and axes.index("S") == arr.ndim - 3:  # planar: (..., S, Y, X)
        arr = np.moveaxis(arr, -3, -1)
    if colormap is not None:  # palette indices -> the RGB they stand for (as a palette PNG is read)
        table = np.moveaxis(np.asarray(colormap), 0, -1)  # (entries, 3)
        if arr.dtype.kind not in "ui" or int(arr.max(initial=0)) >= len(table):
            raise _fail(path, "palette TIFF with indices outside its colour map")
        arr = table[arr]
        if np.all(table % 257 == 0):  # an 8-bit palette stored as 16-bit TIFF entries
            arr = (arr // 257).astype(np.uint8)
        log.info("%s: palette TIFF expanded to RGB", path)
    _check_dtype(path, arr.dtype)
    meta: dict[str, Any] = {
        "format": "tiff",
        "path": str(path),
        "spacing": None,
        "dtype": str(arr.dtype),
        "bits": int(arr.dtype.itemsize * 8),
        "range": _int_range(arr.dtype),
        "mode": None,
        "photometric": "miniswhite" if photometric == "MINISWHITE" else None,
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


def _write_tiff(path: Path, data: np.ndarray, like: Record | None = None) -> Path:
    """Write (N, C, H, W) in the on-disk dtype; a MINISWHITE source stays MINISWHITE (the values
    are the source's, so a viewer must not show them inverted)."""
    import tifffile

    img = np.moveaxis(data, 1, -1)  # (N, H, W, C)
    if img.shape[-1] == 1:
        img = img[..., 0]
    if len(img) == 1:
        img = img[0]
    grey = "miniswhite" if like is not None and like.meta.get("photometric") == "miniswhite" else "minisblack"
    photometric = "rgb" if data.shape[1] == 3 else grey
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(img), photometric=photometric)
    return path
