"""The through-plane plan of a volume: which axis is thick, by what factor, with which slice profile.

:func:`plan_iso` reads the spacing, picks the low-resolution axis (the largest spacing), and
checks what through-plane SR can do with it. Three grids along that axis matter:

- the thick slices: ``n_in`` slices ``spacing[axis]`` (S) apart;
- the model grid: the finest in-plane spacing (d). The model is trained on in-plane slices
  degraded to look like the slices (factor S / d, the slice profile in units of d) and
  reconstructs on this grid: ``n_fine = ceil(n_in S / d)`` voxels;
- the output grid: ``out_spacing`` (``--factor auto``: d, an isotropic volume; ``--factor F``:
  S / F; ``--spacing``: given), ``n_out = ceil(n_in S / out_spacing)`` voxels, resampled from
  the model grid with cubic B-splines when it differs.

All three start at the first slice's outer edge (``align_corners=False``): output voxel j
lies at thick-slice index ``(j + 0.5) out_spacing / S - 0.5``, and the last output voxel
reaches to (or less than one voxel past) the last slice's outer edge: the whole field of view
is covered (73 slices of 3.5 mm on a 1 mm grid: 256 voxels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffsr.core.errors import DataError, DiffsrError
from diffsr.data.slice_profile import GRID_TOLERANCE, MAX_FACTOR, SliceProfile, check_profile
from diffsr.volumes.volume import Volume

__all__ = ["ISOTROPIC_WITHIN", "IsoPlan", "plan_iso", "read_profile"]

#: a volume whose largest spacing is within this ratio of the finest in-plane one is isotropic
ISOTROPIC_WITHIN = 1.1


@dataclass(frozen=True)
class IsoPlan:
    """What ``diffsr iso`` does to one volume (see the module docstring for the three grids)."""

    axis: int  # the volume axis across the thick slices
    spacing: tuple[float, float, float]  # input voxel spacing (mm)
    fine: float  # the model grid's spacing along ``axis`` (mm): the finest in-plane spacing
    out_spacing: float  # output spacing along ``axis`` (mm)
    thickness: float  # slice thickness (mm): the profile's FWHM (gaussian) or width (rect)
    profile: str | tuple[float, ...] = "gaussian"  # or samples at the fine spacing
    n_in: int = 0  # thick slices
    in_plane: tuple[int, int] = field(default=(0, 1))

    @property
    def slice_spacing(self) -> float:
        """S: the distance between slice centres (mm)."""
        return self.spacing[self.axis]

    @property
    def gap(self) -> float:
        """The gap between slices (mm): S - thickness (negative for overlapping slices)."""
        return self.slice_spacing - self.thickness

    @property
    def factor(self) -> float:
        """The model's factor: S / fine."""
        return self.slice_spacing / self.fine

    @property
    def out_factor(self) -> float:
        """S / out_spacing."""
        return self.slice_spacing / self.out_spacing

    @property
    def n_fine(self) -> int:
        """Voxels of the model grid along the axis."""
        return math.ceil(self.n_in * self.factor - GRID_TOLERANCE)

    @property
    def n_out(self) -> int:
        """Voxels of the output grid along the axis."""
        return math.ceil(self.n_in * self.out_factor - GRID_TOLERANCE)

    @property
    def slice_profile(self) -> SliceProfile:
        """The slice profile in model-grid units."""
        return SliceProfile(self.factor, self.thickness / self.fine, self.profile)

    def out_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        out = list(shape)
        out[self.axis] = self.n_out
        return tuple(out)  # type: ignore[return-value]

    def out_affine(self, affine: np.ndarray) -> np.ndarray:
        """The output grid's affine: index j along the axis -> input index (j + 0.5) / out_factor - 0.5."""
        t = np.eye(4)
        t[self.axis, self.axis] = 1.0 / self.out_factor
        t[self.axis, 3] = 0.5 / self.out_factor - 0.5
        return np.asarray(affine, dtype=float) @ t

    def describe(self) -> str:
        """One line: axis, spacings, factor, profile."""
        sp = " x ".join(f"{s:g}" for s in self.spacing)
        prof = self.profile if isinstance(self.profile, str) else f"file ({len(self.profile)} samples)"
        return (f"axis {self.axis} ({sp} mm): {self.n_in} slices {self.slice_spacing:g} mm apart, {prof} profile "
                f"{self.thickness:g} mm (gap {self.gap:g} mm); model factor {self.factor:.3g} on a {self.fine:g} mm "
                f"grid; output {self.n_out} slices of {self.out_spacing:.4g} mm")


def read_profile(path: str | Path, factor: float) -> tuple[float, ...]:
    """A slice profile file: numbers (text: whitespace / comma separated, '#' comments; or .npy, 1-D).

    The samples are the profile at the fine (in-plane) pixel spacing, centred: an odd count from
    3 to ``8 factor + 1``. Anything else is a DataError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such profile file")
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            lines = (line.split("#", 1)[0] for line in path.read_text().splitlines())  # '#' starts a comment
            values = np.array([float(v) for line in lines for v in line.replace(",", " ").split()], dtype=float)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable slice profile ({type(err).__name__}: {err})") from None
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise DataError(f"{path}: a slice profile is 1-D, got an array of shape {values.shape}")
    try:
        return check_profile(values.tolist(), factor)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None


def plan_iso(
    volume: Volume,
    *,
    factor: float | str = "auto",
    spacing: float | None = None,
    gap: float | None = None,
    profile: str = "gaussian",
) -> IsoPlan:
    """The :class:`IsoPlan` for ``volume``; every problem is a one-line DiffsrError.

    factor: "auto" (an isotropic output: the finest in-plane spacing) or the upsampling factor
    along the thick axis (1 <= F <= 12); spacing: the output spacing along it in mm (instead of
    factor). gap: mm between slices (thickness = spacing - gap); None: the DICOM
    SliceThickness when the header has it, else 0. profile: "gaussian" (FWHM = thickness),
    "rect" (width = thickness) or a profile file (:func:`read_profile`).
    """
    sp = volume.spacing
    axis = int(np.argmax(sp))
    in_plane = tuple(a for a in range(3) if a != axis)
    fine = min(sp[a] for a in in_plane)
    shown = " x ".join(f"{s:g}" for s in sp)
    model_factor = sp[axis] / fine
    if model_factor <= ISOTROPIC_WITHIN:
        raise DataError(f"{volume.path}: already isotropic ({shown} mm): there are no thick slices to "
                        f"super-resolve through-plane; use 'diffsr sr' for in-plane SR")
    if model_factor > MAX_FACTOR:
        raise DataError(f"{volume.path}: slices {sp[axis]:g} mm apart on a {fine:g} mm in-plane grid need a factor "
                        f"of {model_factor:.3g}; diffsr iso supports up to {MAX_FACTOR:g}")
    out_spacing = _out_spacing(factor, spacing, sp[axis], fine)
    thickness = _thickness(volume, gap, sp[axis])
    samples: str | tuple[float, ...] = profile
    if profile not in ("gaussian", "rect"):
        samples = read_profile(profile, model_factor)
    return IsoPlan(axis=axis, spacing=sp, fine=fine, out_spacing=out_spacing, thickness=thickness, profile=samples,
                   n_in=volume.shape[axis], in_plane=in_plane)  # type: ignore[arg-type]


def _out_spacing(factor: float | str, spacing: float | None, slice_spacing: float, fine: float) -> float:
    if spacing is not None:
        if factor != "auto":
            raise DiffsrError("--spacing and --factor: give one of them")
        if not 0 < spacing <= slice_spacing:
            raise DiffsrError(f"--spacing {spacing:g}: the output spacing must be in (0, {slice_spacing:g}] mm")
        return float(spacing)
    if factor == "auto":
        return fine
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise DiffsrError(f"--factor: 'auto' or a number, got {factor!r}") from None
    if not 1.0 <= f <= MAX_FACTOR:
        raise DiffsrError(f"--factor {f:g}: must be from 1 to {MAX_FACTOR:g} (the output slice spacing is the input's "
                          f"{slice_spacing:g} mm divided by it)")
    return slice_spacing / f


def _thickness(volume: Volume, gap: float | None, slice_spacing: float) -> float:
    if gap is None:
        header = volume.record.headers[0] if volume.format == "dicom" and volume.record.headers else None
        thickness = float(getattr(header, "SliceThickness", 0) or 0) if header is not None else 0.0
        return thickness if thickness > 0 else slice_spacing
    if not -slice_spacing < gap < slice_spacing:
        raise DiffsrError(f"--gap {gap:g}: must lie between -{slice_spacing:g} and {slice_spacing:g} mm (the slice "
                          f"thickness is the spacing {slice_spacing:g} mm minus the gap)")
    return slice_spacing - gap
