"""NIfTI (.nii, .nii.gz): 2-D, 3-D or 4-D (one volume, ``volume_index``), read with nibabel.

``scl_slope``/``scl_inter`` are applied; ``slice_axis`` picks the voxel axis whose slices become
the 2-D images, H and W being the two other axes in file order (no reorientation: ``axcodes``
says what the axes are). ``meta`` adds ``affine``, ``zooms``, ``slice_axis``, ``volume_index``,
``n_volumes``, ``shape``, ``slope``, ``inter``, ``axcodes``. Writing keeps the source header
(dtype, scaling, sform/qform codes) and scales the affine in-plane; from a non-NIfTI source the
affine is diagonal from ``spacing``. :func:`write_nifti_volume` writes a whole volume on a given
voxel grid (``diffsr iso``). nibabel is imported inside the functions.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from diffsr.core.atomic import atomic_path
from diffsr.core.errors import DataError
from diffsr.data.io.record import (
    NanPolicy,
    Record,
    _cast,
    _check_dtype,
    _check_size,
    _fail,
    _file_values,
    _finite,
    _int_range,
    _one_line,
)


def _read_nifti(path: Path, volume_index: int | None, slice_axis: int, nan_policy: NanPolicy) -> Record:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.header["dim"][1 : 1 + int(img.header["dim"][0])])
    except (ImageFileError, OSError, EOFError, ValueError, IndexError, zlib.error) as err:
        raise _fail(path, f"unreadable NIfTI ({_one_line(err)})") from None
    if not shape or min(shape) < 1:  # nibabel accepts dim[i] <= 0; arrays cannot have it
        raise _fail(path, f"invalid NIfTI header: dimensions {shape} (each must be >= 1)")
    if slice_axis not in (0, 1, 2):
        raise _fail(path, f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    in_plane_dims = tuple(shape[a] for a in range(min(len(shape), 3)) if a != slice_axis)
    _check_size(path, shape[:3], in_plane_dims)  # one volume is read at a time
    disk = np.dtype(img.get_data_dtype())
    _check_dtype(path, disk)
    if len(shape) == 2:  # a single 2-D image: one slice whatever slice_axis says
        shape, slice_axis = (*shape, 1), 2
    if len(shape) not in (3, 4) and not (len(shape) > 4 and all(s == 1 for s in shape[4:])):
        raise _fail(path, f"unsupported NIfTI shape {shape} (expected 2-D, 3-D or 4-D)")
    n_volumes = shape[3] if len(shape) >= 4 else 1
    if volume_index is None:
        if n_volumes > 1:
            raise _fail(path, f"4-D NIfTI with {n_volumes} volumes: choose one with --volume-index "
                              f"(data.volume_index) 0..{n_volumes - 1}")
        volume_index = 0
    if not 0 <= volume_index < n_volumes:
        raise _fail(path, f"volume_index {volume_index} is out of range: the file has {n_volumes} volume(s)")
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


def _scaled_affine(affine: np.ndarray, axes: list[int], scale: int) -> np.ndarray:
    """The affine of a grid ``scale`` x finer along ``axes`` covering the same field of view.

    New voxel index i sits at old index (i + 0.5) / scale - 0.5 (align_corners=False).
    """
    t = np.eye(4)
    for a in axes:
        t[a, a] = 1.0 / scale
        t[a, 3] = 0.5 / scale - 0.5
    return affine @ t


def _write_nifti(path: Path, unit: np.ndarray, to_file: Callable[[np.ndarray], np.ndarray], like: Record,
                 scale: int) -> Path:
    """Write ``unit`` (N, 1, H, W) in [0, 1] mapped by ``to_file`` to file units, stored like ``like``."""
    import nibabel as nib

    if unit.shape[1] != 1:
        raise DataError(f"{path}: NIfTI output needs 1 channel, got {unit.shape[1]}")
    slice_axis = int(like.meta.get("slice_axis", 2))
    in_plane = [a for a in range(3) if a != slice_axis]
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
        stored = _file_values(unit, lambda u: (to_file(u) - inter) / slope, dtype)
    else:
        stored, slope, inter = _file_values(unit, to_file, dtype), 1.0, 0.0
    vol = np.moveaxis(stored[:, 0], 0, slice_axis)
    img = nib.Nifti1Image(vol, affine, header)
    img.set_data_dtype(dtype)
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    if slope != 1.0 or inter != 0.0:
        img.header.set_slope_inter(slope, inter)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def write_nifti_volume(path: Path, values: np.ndarray, like: Record, affine: np.ndarray) -> Path:
    """Write a 3-D volume (A0, A1, A2) in file units on the voxel grid ``affine`` (voxel -> mm).

    A NIfTI ``like`` lends its header (dtype, ``scl_slope``/``scl_inter``, sform/qform codes);
    zooms follow the affine. From a DICOM ``like`` the affine is DICOM's patient frame (LPS)
    and is turned into NIfTI's RAS (x and y negated); the data are float32 then. Written
    atomically.
    """
    import nibabel as nib

    if values.ndim != 3:
        raise ValueError(f"values: expected (A0, A1, A2), got {values.shape}")
    affine = np.asarray(affine, dtype=float)
    dtype = np.dtype(like.meta.get("dtype", "float32"))
    if like.format == "nifti":
        header = like.headers[0].copy() if like.headers else nib.load(like.meta["path"]).header.copy()
        sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
        slope, inter = float(like.meta.get("slope", 1.0)), float(like.meta.get("inter", 0.0))
    else:
        header, sform_code, qform_code, slope, inter = None, 1, 1, 1.0, 0.0
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # DICOM LPS -> NIfTI RAS
        dtype = np.dtype(np.float32)
    if dtype.kind in "ui":
        stored = _cast((values - inter) / slope, dtype)
    else:
        stored, slope, inter = values.astype(dtype), 1.0, 0.0
    img = nib.Nifti1Image(stored, affine, header)
    img.set_data_dtype(dtype)
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    img.header.set_zooms(tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)))
    if slope != 1.0 or inter != 0.0:
        img.header.set_slope_inter(slope, inter)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
