"""PNG: 8/16-bit grey, grey + alpha, RGB, RGBA, palette and 1-bit images.

Pillow reads and writes them, except that it reduces 16-bit PNGs with colour or alpha to 8 bits:
those are decoded here (interlaced ones are refused) and 16-bit RGB is encoded here. The IHDR
size is checked against :data:`~diffsr.data.io.record.MAX_ELEMENTS` before anything is decoded.
``meta`` adds ``mode`` (the PIL mode) and ``alpha_dropped``. Writing keeps the source's 8/16-bit
dtype; a record with N > 1 becomes a folder of per-slice PNGs.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from diffsr.core.atomic import atomic_folder, atomic_path
from diffsr.core.errors import DataError
from diffsr.data.io.record import (
    Record,
    _check_dtype,
    _check_size,
    _fail,
    _hw_c_to_nchw,
    _int_range,
    _one_line,
    _stem,
    _suffix,
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from the IHDR chunk, or None when this is not a PNG.

    Raises DataError when the header claims more than :data:`MAX_ELEMENTS` values.
    """
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    _check_size(path, (h, w, _PNG_CHANNELS.get(head[25], 1)))
    return head[24], head[25]


def _png16_read(path: Path) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG (any colour type) -> uint16 (H, W, C).

    Pillow reduces 16-bit colour PNGs to 8 bits, so these are decoded here.
    """
    data = path.read_bytes()
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            raise _fail(path, "truncated PNG file")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if ihdr is None or not idat:
        raise _fail(path, "truncated PNG file (no image data)")
    w, h, depth, ctype, _, _, interlace = ihdr
    if interlace:
        raise _fail(path, "interlaced 16-bit PNG is not supported (save it without interlacing)")
    channels = _PNG_CHANNELS[ctype]
    bpp = 2 * channels
    stride = w * bpp
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as err:
        raise _fail(path, f"truncated or corrupt PNG data ({err})") from None
    if len(raw) < h * (stride + 1):
        raise _fail(path, "truncated PNG file")
    rows = np.frombuffer(raw, np.uint8, count=h * (stride + 1)).reshape(h, stride + 1)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: running sum along each byte lane
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) & 255
        elif kind == 2:  # Up
            cur = (line + prev) & 255
        elif kind in (3, 4):  # Average / Paeth depend on the left neighbour: byte loop
            vals, up = line.tolist(), prev.tolist()
            for i in range(stride):
                a = vals[i - bpp] if i >= bpp else 0
                b = up[i]
                if kind == 3:
                    vals[i] = (vals[i] + (a + b) // 2) & 255
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    vals[i] = (vals[i] + pred) & 255
            cur = np.asarray(vals, np.int32)
        else:
            raise _fail(path, f"corrupt PNG data (filter type {kind})")
        out[y] = cur
        prev = cur
    return out.view(">u2").astype(np.uint16).reshape(h, w, channels)


def _png16_write(path: Path, arr: np.ndarray) -> None:
    """Encode uint16 (H, W, C) with C in {1, 3} as a 16-bit PNG (filter 0, zlib)."""
    h, w, c = arr.shape
    ctype = {1: 0, 3: 2}[c]
    big = np.ascontiguousarray(arr.astype(">u2")).reshape(h, w * c)
    raw = b"".join(b"\x00" + big[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (
        _PNG_SIGNATURE
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)


def _pillow_read(path: Path) -> tuple[str, np.ndarray]:
    """(PIL mode, array) of a PNG Pillow can decode (palette -> RGB(A), 1-bit -> L)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "1":
            im = im.convert("L")
        return mode, np.asarray(im)


def _read_png(path: Path) -> Record:
    from PIL import Image, UnidentifiedImageError

    try:
        header = _png_header(path)
    except OSError as err:
        raise _fail(path, f"cannot read file ({err.strerror or err})") from None
    if header is None:
        raise _fail(path, "not a PNG image")
    depth, ctype = header
    meta: dict[str, Any] = {"format": "png", "path": str(path), "spacing": None}
    if depth == 16 and ctype in (2, 4, 6):
        arr = _png16_read(path)
        meta["mode"] = {2: "RGB;16", 4: "LA;16", 6: "RGBA;16"}[ctype]
    else:
        try:
            # the IHDR size was checked against diffsr's own limits above; Pillow's
            # DecompressionBombWarning would only add a line for an image already accepted
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                mode, arr = _pillow_read(path)
        except Image.DecompressionBombError as err:
            raise _fail(path, f"image too large ({_one_line(err)})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, zlib.error) as err:
            raise _fail(path, f"unreadable or truncated PNG ({_one_line(err)})") from None
        meta["mode"] = mode
        if arr.dtype.kind == "i" and depth == 16:  # mode "I" holding 16-bit grey levels
            arr = arr.astype(np.uint16)
    dtype = arr.dtype
    _check_dtype(path, dtype)
    meta.update(dtype=str(dtype), bits=int(dtype.itemsize * 8), range=_int_range(dtype), layout="HWC")
    nchw = _hw_c_to_nchw(path, arr, meta)
    return Record(nchw.astype(np.float32), meta)


def _write_png_file(path: Path, hwc: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        if hwc.dtype == np.uint16 and hwc.shape[-1] == 3:
            _png16_write(tmp, hwc)
        else:
            img = hwc[..., 0] if hwc.shape[-1] == 1 else hwc
            Image.fromarray(np.ascontiguousarray(img)).save(tmp, format="PNG")


def _write_png(path: Path, data: np.ndarray) -> Path:
    hwc = np.moveaxis(data, 1, -1)
    if len(hwc) == 1:
        _write_png_file(path, hwc[0])
        return path
    folder = path.with_name(_stem(path)) if _suffix(path) == ".png" else path
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: PNG slice output is a folder, but a file of that name exists")
    # written into a temporary sibling folder, renamed at the end: never a half-written series
    with atomic_folder(folder) as tmp:
        for i, img in enumerate(hwc):
            _write_png_file(tmp / f"{_stem(path)}_{i:04d}.png", img)
    return folder
