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

See docs/data.md for the full description of each format and the metadata kept.
"""

from __future__ import annotations

import copy
import logging
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from diffsr.core.atomic import atomic_folder, atomic_path
from diffsr.core.errors import DataError

if TYPE_CHECKING:
    from diffsr.data.normalize import Intensity

log = logging.getLogger(__name__)

#: file suffixes recognised as images by :func:`list_inputs` (lower case)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".nii", ".nii.gz", ".dcm", ".dicom")
#: formats :func:`read` and :func:`write` understand
FORMATS = ("png", "tiff", "npy", "dicom", "nifti")
NanPolicy = Literal["error", "zero"]

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
        """One of :data:`FORMATS`."""
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


def format_of(path: str | Path) -> str | None:
    """The format :func:`read` would use for ``path`` (a folder of DICOM slices is "dicom")."""
    path = Path(path)
    if path.is_dir():
        return "dicom" if _dicom_files(path) else None
    fmt = _SUFFIX_FORMAT.get(_suffix(path))
    if fmt is None and _suffix(path) == "" and _has_dicom_preamble(path):
        return "dicom"
    return fmt


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


# ----------------------------------------------------------------------------- PNG

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
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                if mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif mode == "1":
                    im = im.convert("L")
                arr = np.asarray(im)
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


# ----------------------------------------------------------------------------- TIFF


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


# ----------------------------------------------------------------------------- NPY


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
    _check_size(path, tuple(shape))
    if not dtype.hasobject:
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        have = path.stat().st_size - offset
        if have < need:
            raise _fail(path, f"truncated .npy: the header claims {need} bytes of data, the file holds {have}")


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


# ----------------------------------------------------------------------------- DICOM


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

    # order: along the slice normal when every slice has a position, else by InstanceNumber
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
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    keys = [keys[i] for i in order]

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
    first = headers[0]
    stored_dtype = np.dtype(stored_dtypes[0])
    bits = int(getattr(first, "BitsStored", stored_dtype.itemsize * 8))
    signed = int(getattr(first, "PixelRepresentation", 0)) == 1
    lo_s, hi_s = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = [v for s, i in rescale for v in (lo_s * s + i, hi_s * s + i)]

    spacing: list[float] | None = None
    pixel_spacing = _float_list(getattr(first, "PixelSpacing", None))
    if pixel_spacing is not None and len(pixel_spacing) == 2:
        slice_spacing: float | None = None
        if order_by == "position" and len(keys) > 1:
            slice_spacing = float(np.median(np.diff(keys)))
        elif "SpacingBetweenSlices" in first:
            slice_spacing = float(first.SpacingBetweenSlices)
        elif "SliceThickness" in first:
            slice_spacing = float(first.SliceThickness)
        spacing = pixel_spacing + ([slice_spacing] if slice_spacing is not None else [])
    meta: dict[str, Any] = {
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
    return Record(array, meta, headers=headers)


# ----------------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path, volume_index: int, slice_axis: int, nan_policy: NanPolicy) -> Record:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as err:
        raise _fail(path, f"unreadable NIfTI ({_one_line(err)})") from None
    _check_size(path, shape[:3])  # one volume is read at a time
    disk = np.dtype(img.get_data_dtype())
    _check_dtype(path, disk)
    if len(shape) == 2:  # a single 2-D image: one slice whatever slice_axis says
        shape, slice_axis = (*shape, 1), 2
    if len(shape) not in (3, 4) and not (len(shape) > 4 and all(s == 1 for s in shape[4:])):
        raise _fail(path, f"unsupported NIfTI shape {shape} (expected 2-D, 3-D or 4-D)")
    n_volumes = shape[3] if len(shape) >= 4 else 1
    if not 0 <= volume_index < n_volumes:
        raise _fail(path, f"volume_index {volume_index} is out of range: the file has {n_volumes} volume(s)")
    if slice_axis not in (0, 1, 2):
        raise _fail(path, f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    try:
        proxy = img.dataobj
        if len(img.shape) == 2:
            vol = np.asanyarray(proxy)[:, :, None]
        elif len(img.shape) == 3:
            vol = np.asanyarray(proxy)
        else:
            vol = np.asanyarray(proxy[:, :, :, volume_index]).reshape(shape[:3])
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise _fail(path, f"unreadable or truncated NIfTI data ({_one_line(err)})") from None
    vol = _finite(path, np.asarray(vol), nan_policy)
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    while len(zooms) < 3:
        zooms.append(1.0)
    in_plane = [a for a in range(3) if a != slice_axis]
    rng = _int_range(disk)
    if rng is not None:
        ends = (rng[0] * slope + inter, rng[1] * slope + inter)
        rng = (min(ends), max(ends))
    meta: dict[str, Any] = {
        "format": "nifti",
        "path": str(path),
        "dtype": str(disk),
        "bits": int(disk.itemsize * 8),
        "range": rng,
        "mode": None,
        "slope": slope,
        "inter": inter,
        "shape": list(shape),
        "n_volumes": n_volumes,
        "volume_index": volume_index,
        "slice_axis": slice_axis,
        "affine": np.asarray(img.affine, dtype=float).tolist(),
        "zooms": zooms,
        "spacing": [zooms[in_plane[0]], zooms[in_plane[1]], zooms[slice_axis]],
        "axcodes": "".join(nib.aff2axcodes(img.affine)),
        "layout": "volume",
    }
    array = np.moveaxis(vol, slice_axis, 0)[:, None]  # (N, 1, H, W): H, W = the two other axes, in order
    return Record(np.ascontiguousarray(array, dtype=np.float32), meta, headers=[img.header.copy()])


# ----------------------------------------------------------------------------- public read


def read(
    path: str | Path,
    *,
    volume_index: int = 0,
    slice_axis: int = 2,
    nan_policy: NanPolicy = "error",
) -> Record:
    """Read an image, volume or DICOM series into a :class:`Record` (float32 (N, C, H, W), file units).

    path: a .png/.tif/.tiff/.npy/.nii/.nii.gz/.dcm file, or a folder of DICOM slices (one series).
    volume_index: which volume of a 4-D NIfTI (an error when out of range).
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
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    dicoms = [p for p in files if _is_dicom_file(p)]
    images = [p for p in files if _suffix(p) in _SUFFIX_FORMAT and p not in dicoms]
    found: list[Path] = [path] if dicoms else []
    found += images
    folders = (d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    found += sorted(d for d in folders if _dicom_files(d))
    if not found:
        raise _fail(path, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM series)")
    return found


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
    unit = np.clip(unit, 0.0, 1.0)
    dtype = np.dtype(like.meta.get("dtype", "float32"))
    if fmt == "png":
        if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            log.info("%s: %s source written as a 16-bit PNG of the [0, 1] image", path, dtype)
            return _write_png(path, _cast(unit * 65535.0, np.dtype(np.uint16)))
        return _write_png(path, _cast(_inverse(intensity, unit), dtype))
    values = _inverse(intensity, unit)
    if fmt == "tiff":
        return _write_tiff(path, _cast(values, dtype))
    if fmt == "npy":
        return _write_npy(path, _cast(values, dtype), like)
    if fmt == "nifti":
        return _write_nifti(path, values, like, scale)
    return _write_dicom(path, values, like, scale)


def _inverse(intensity: Intensity, unit: np.ndarray) -> np.ndarray:
    return np.asarray(intensity.inverse(unit), dtype=np.float64)


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


def _scaled_affine(affine: np.ndarray, axes: list[int], scale: int) -> np.ndarray:
    """The affine of a grid ``scale`` x finer along ``axes`` covering the same field of view.

    New voxel index i sits at old index (i + 0.5) / scale - 0.5 (align_corners=False).
    """
    t = np.eye(4)
    for a in axes:
        t[a, a] = 1.0 / scale
        t[a, 3] = 0.5 / scale - 0.5
    return affine @ t


def _write_nifti(path: Path, values: np.ndarray, like: Record, scale: int) -> Path:
    import nibabel as nib

    if values.shape[1] != 1:
        raise DataError(f"{path}: NIfTI output needs 1 channel, got {values.shape[1]}")
    slice_axis = int(like.meta.get("slice_axis", 2))
    in_plane = [a for a in range(3) if a != slice_axis]
    vol = np.moveaxis(values[:, 0], 0, slice_axis)
    dtype = np.dtype(like.meta.get("dtype", "float32"))
    if like.format == "nifti":
        header = like.headers[0].copy() if like.headers else nib.load(like.meta["path"]).header.copy()
        affine = np.asarray(like.meta["affine"], dtype=float)
        sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
        slope, inter = float(like.meta.get("slope", 1.0)), float(like.meta.get("inter", 0.0))
    else:
        header = None
        spacing = list(like.meta.get("spacing") or [1.0, 1.0])
        zooms = [1.0, 1.0, 1.0]
        zooms[in_plane[0]], zooms[in_plane[1]] = float(spacing[0]), float(spacing[1])
        zooms[slice_axis] = float(spacing[2]) if len(spacing) > 2 and spacing[2] else 1.0
        affine = np.diag([*zooms, 1.0])
        sform_code, qform_code, slope, inter = 2, 0, 1.0, 0.0
        if dtype.kind not in "uif" or dtype.itemsize > 8:
            dtype = np.dtype(np.float32)
    if scale != 1:
        affine = _scaled_affine(affine, in_plane, scale)
    if dtype.kind in "ui":
        stored = _cast((vol - inter) / slope, dtype)
    else:
        stored, slope, inter = vol.astype(dtype), 1.0, 0.0
    img = nib.Nifti1Image(stored, affine, header)
    img.set_data_dtype(dtype)
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    if slope != 1.0 or inter != 0.0:
        img.header.set_slope_inter(slope, inter)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


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
