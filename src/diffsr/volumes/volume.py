"""Volumes with their geometry: read a NIfTI volume or a DICOM series, write one on a new grid.

A :class:`Volume` is a 3-D array in file units plus the affine that maps voxel indices to
millimetres (NIfTI: the file's sform/qform, RAS; DICOM: the patient frame, LPS, built from
ImagePositionPatient, ImageOrientationPatient and PixelSpacing). What cannot be a volume for
through-plane SR is refused here with a one-line :class:`~diffsr.core.errors.DataError`: a 2-D
image, a 4-D file without a volume index, a missing or zero spacing, colour data, a DICOM
series whose slices are not evenly spaced (the message names the gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffsr.core.errors import DataError
from diffsr.data.io import Record, format_of, read

__all__ = ["Volume", "read_volume", "write_volume"]

#: relative tolerance on the slice steps of a DICOM series
SPACING_TOLERANCE = 0.01


@dataclass
class Volume:
    """A 3-D volume: ``data`` (A0, A1, A2) float32 in file units, ``affine`` voxel index -> mm.

    ``spacing`` is the voxel size per axis (mm); ``record`` is what the reader returned (format,
    headers, meta) and is what the writers copy headers from.
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    record: Record

    @property
    def path(self) -> Path:
        """The file or series folder this volume was read from."""
        return self.record.path

    @property
    def format(self) -> str:
        """"nifti" or "dicom"."""
        return self.record.format

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]


def read_volume(path: str | Path, *, volume_index: int | None = None) -> Volume:
    """Read a NIfTI volume or a DICOM series (a folder) as a :class:`Volume`.

    volume_index: which volume of a 4-D NIfTI (required when it has more than one).
    """
    path = Path(path)
    fmt = format_of(path) if path.exists() else None
    if fmt == "png":
        raise DataError(f"{path}: a 2-D image (PNG); diffsr iso needs a volume with its voxel spacing, a NIfTI file "
                        f"or a DICOM series folder (use 'diffsr sr' for 2-D images)")
    if path.exists() and fmt not in ("nifti", "dicom"):
        raise DataError(f"{path}: {fmt or 'this'} file carries no voxel spacing; diffsr iso needs a NIfTI volume or "
                        f"a DICOM series folder")
    record = read(path, volume_index=volume_index or 0, slice_axis=2)
    if fmt == "nifti":
        volume = _nifti_volume(record, volume_index)
    else:
        volume = _dicom_volume(record)
    if min(volume.shape) < 2:
        dims = "x".join(str(s) for s in volume.shape)
        raise DataError(f"{path}: a 2-D image ({dims} voxels); diffsr iso needs a volume with several slices "
                        f"(use 'diffsr sr' for 2-D images)")
    return volume


def _check_spacing(path: Path, spacing: list[float] | None) -> tuple[float, float, float]:
    if spacing is None or len(spacing) != 3:
        raise DataError(f"{path}: no voxel spacing in the header; diffsr iso needs the spacing of every axis")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        shown = " x ".join(f"{s:g}" for s in spacing)
        raise DataError(f"{path}: voxel spacing {shown} mm has a zero, negative or missing entry; diffsr iso needs "
                        f"the spacing of every axis (fix the header)")
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _nifti_volume(record: Record, volume_index: int | None) -> Volume:
    meta = record.meta
    if int(meta.get("n_volumes", 1)) > 1 and volume_index is None:
        raise DataError(f"{record.path}: a 4-D volume with {meta['n_volumes']} volumes: choose one with "
                        f"--volume-index (0 .. {int(meta['n_volumes']) - 1})")
    # read() put the slices of axis 2 first: (A2, 1, A0, A1) -> (A0, A1, A2)
    data = np.ascontiguousarray(np.moveaxis(record.array[:, 0], 0, 2), dtype=np.float32)
    # nibabel replaces a zero pixdim by 1 when it loads a header: check what the file says
    _check_spacing(record.path, _raw_zooms(record.path))
    spacing = _check_spacing(record.path, [float(z) for z in meta.get("zooms", [])])
    affine = np.asarray(meta["affine"], dtype=float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{record.path}: the affine is singular or not finite; fix the header")
    return Volume(data, affine, spacing, record)


def _raw_zooms(path: Path) -> list[float]:
    """pixdim[1:4] as stored in the file (no fixes applied)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    header_class = type(nib.load(str(path)).header)
    with ImageOpener(str(path)) as fh:
        raw = header_class.from_fileobj(fh, check=False)
    return [float(z) for z in raw["pixdim"][1:4]]


def _dicom_volume(record: Record) -> Volume:
    meta, path = record.meta, record.path
    if record.array.shape[1] != 1:
        raise DataError(f"{path}: colour DICOM; diffsr iso reads grey-level volumes")
    if meta.get("layout") != "series" or len(record.headers or []) != record.array.shape[0]:
        raise DataError(f"{path}: a single DICOM file ({record.array.shape[0]} frame(s)); diffsr iso reads a DICOM "
                        f"series, one file per slice, from a folder")
    pixel = meta.get("spacing")
    if pixel is None or len(pixel) < 2:
        raise DataError(f"{path}: no PixelSpacing in the DICOM headers; diffsr iso needs the spacing of every axis")
    data = np.ascontiguousarray(record.array[:, 0], dtype=np.float32)  # (slices, rows, cols)
    row_cos, col_cos, normal = _orientation(meta.get("orientation"))
    step_vector, origin = _slice_steps(record, normal)
    spacing = _check_spacing(path, [float(np.linalg.norm(step_vector)), float(pixel[0]), float(pixel[1])])
    affine = np.eye(4)
    affine[:3, 0] = step_vector
    affine[:3, 1] = col_cos * spacing[1]  # down the rows
    affine[:3, 2] = row_cos * spacing[2]  # along the columns
    affine[:3, 3] = origin
    return Volume(data, affine, spacing, record)


def _orientation(iop: list[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row cosines, column cosines, slice normal); axial identity when the header has none."""
    if iop is None or len(iop) != 6:
        row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    else:
        row, col = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float)
    return row, col, np.cross(row, col)


def _slice_steps(record: Record, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the step vector between slices, the first slice's position) of a sorted DICOM series.

    Every step along the normal must be within 1 % of the median: a missing or repeated slice is
    a DataError naming the two slices and the gap.
    """
    meta, path = record.meta, record.path
    positions = meta.get("positions") or []
    if meta.get("order_by") != "position" or any(p is None for p in positions):
        spacing = meta.get("spacing") or []
        if len(spacing) < 3 or not spacing[2]:
            raise DataError(f"{path}: no slice positions and no slice spacing in the DICOM headers; diffsr iso needs "
                            f"the spacing of every axis")
        first = positions[0] if positions and positions[0] is not None else [0.0, 0.0, 0.0]
        return normal * float(spacing[2]), np.asarray(first, dtype=float)
    pos = np.asarray(positions, dtype=float)
    steps = pos[1:] - pos[:-1]
    along = steps @ normal
    median = float(np.median(along))
    bad = np.flatnonzero(np.abs(along - median) > max(SPACING_TOLERANCE * abs(median), 1e-3))
    if median <= 0 or bad.size:
        i = int(bad[0]) if bad.size else 0
        files = [Path(f).name for f in meta.get("files", [])]
        names = f" ({files[i]} -> {files[i + 1]})" if len(files) > i + 1 else ""
        what = "a missing slice?" if along[i] > median else "a repeated or overlapping slice?"
        raise DataError(f"{path}: uneven slice spacing: a gap of {along[i]:.2f} mm between slices {i} and {i + 1}"
                        f"{names}, where the others are {median:.2f} mm apart ({what}); diffsr iso needs evenly "
                        f"spaced slices")
    return steps.mean(axis=0), pos[0]


def write_volume(path: Path, values: np.ndarray, like: Volume, affine: np.ndarray, *, fmt: str | None = None,
                 description: str = "isotropic (diffsr iso)") -> Path:
    """Write ``values`` (A0, A1, A2) in file units on the grid ``affine``, in ``like``'s format (or ``fmt``).

    NIfTI keeps ``like``'s header (dtype, scaling, codes; from DICOM: float32, LPS -> RAS); DICOM
    (needs a DICOM ``like``) is a new series folder, one file per slice along axis 0.
    """
    from diffsr.data.io.dicom import write_dicom_volume
    from diffsr.data.io.nifti import write_nifti_volume

    fmt = fmt or like.format
    if fmt == "nifti":
        return write_nifti_volume(path, values, like.record, affine)
    if fmt == "dicom":
        return write_dicom_volume(path, values, like.record, affine, description=description)
    raise DataError(f"{path}: unknown volume format '{fmt}' (nifti or dicom)")
