"""Thick slices along one axis: a 1-D slice profile and a (possibly non-integer) decimation.

A thick-slice scan is fine in-plane (pixel d) and coarse through-plane: slice k integrates the
object over its slice profile (thickness T, the FWHM of a Gaussian or the width of a rect),
and the slice centres are S = T + gap apart. Along that one axis, in units of the fine pixel
(factor f = S / d, thickness t = T / d), this module gives the linear operators as matrices:

- ``D`` (K, N), :meth:`SliceProfile.matrix`: thick slices from N fine pixels,
  ``y_k = sum_n D[k, n] x_n``. Slice centres ``c_k = (k + 0.5) f - 0.5`` (k < K = floor(N / f)):
  the thick and the fine grid start at the same edge (``align_corners=False``, as the
  resizers). ``D[k, n] = integral over pixel n of p(u - c_k)``: the fine pixel is a box of
  width 1 and p the profile (``gaussian``: FWHM t, ``rect``: width t, or samples given at
  integer offsets, read off their linear interpolant at ``n - c_k``). Rows sum to one (the
  part of a profile beyond the image is dropped and the rest renormalised).
- ``U`` (N, K), :meth:`SliceProfile.interpolation`: cubic B-spline interpolation of the thick
  slices back onto the fine grid (pixel n sits at slice coordinate ``(n + 0.5) / f - 0.5``;
  mirror boundaries, as ``scipy.ndimage.map_coordinates(order=3, mode="mirror")``). This is
  the condition every one-axis model sees: the thick-slice image interpolated to the fine grid.
- ``P`` (N, K), :meth:`SliceProfile.pseudo_inverse`: ``D^+``. ``x + P (y - D x)`` is the
  orthogonal projection onto ``{x : D x = y}`` (slice-axis data consistency): after it the
  image re-degraded with the profile reproduces the thick slices ``y`` exactly.

:class:`SliceProfileDegradation` (``slice_profile`` in :data:`~diffsr.data.degrade.DEGRADATIONS`)
makes training pairs from in-plane images: ``lr = U D hr`` along one image axis, on the HR grid
(the model's scale is 1: ``data.scale: 1``); :meth:`~SliceProfileDegradation.measure` also
returns the thick slices ``D hr``. See docs/volumes.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from diffsr.core.errors import ConfigError
from diffsr.core.schema import Strict
from diffsr.core.shapes import check_image
from diffsr.data.degrade import DEGRADATIONS, Degradation

__all__ = [
    "GRID_TOLERANCE",
    "MAX_FACTOR",
    "SliceProfile",
    "SliceProfileConfig",
    "SliceProfileDegradation",
    "along",
    "bspline_matrix",
    "check_profile",
    "slice_centres",
]

#: the largest through-plane factor diffsr accepts (slice spacing / fine pixel)
MAX_FACTOR = 12.0
#: slack when counting slices and voxels: spacings read from headers are float32 (4.32 / 0.9 mm is
#: 4.8000003), and K slices of factor f must give floor(K f) fine voxels that hold K slices again
GRID_TOLERANCE = 1e-4
#: FWHM of a Gaussian = this x sigma
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

ProfileKind = Literal["gaussian", "rect"]


# ----------------------------------------------------------------------------- helpers


def check_profile(values: Sequence[float], factor: float) -> tuple[float, ...]:
    """A sampled slice profile, checked: odd length from 3 to ``8 factor + 1``, finite, positive sum.

    The samples are the profile at integer offsets ``-m .. m`` fine pixels from the slice centre
    (the middle sample is the centre). Raises ValueError with a one-line reason.
    """
    vals = tuple(float(v) for v in values)
    longest = 2 * math.floor(4 * factor) + 1
    if len(vals) < 3 or len(vals) % 2 == 0 or len(vals) > longest:
        raise ValueError(
            f"{len(vals)} samples: a slice profile is sampled at the fine (in-plane) pixel spacing, centred, "
            f"so it needs an odd number of samples from 3 to {longest} (+-4 slice spacings at factor {factor:g})"
        )
    if not all(math.isfinite(v) for v in vals):
        raise ValueError("the slice profile holds NaN or Inf")
    if sum(vals) <= 0:
        raise ValueError(f"the slice profile sums to {sum(vals):g}: it must be positive")
    return vals


def slice_centres(n: int, factor: float) -> Tensor:
    """Centres (K,) of the thick slices on a fine axis of n pixels, in fine-pixel index units (float64).

    K = floor(n / factor) (at least 1, with :data:`GRID_TOLERANCE`); ``c_k = (k + 0.5) factor - 0.5``.
    """
    k = max(1, math.floor(n / factor + GRID_TOLERANCE))
    return (torch.arange(k, dtype=torch.float64) + 0.5) * factor - 0.5


def _mirror(index: Tensor, k: int) -> Tensor:
    """Whole-sample symmetric indices (d c b | a b c d | c b a) into 0 .. k - 1."""
    if k == 1:
        return torch.zeros_like(index)
    period = 2 * (k - 1)
    index = index.remainder(period)
    return torch.where(index > k - 1, period - index, index)


def _cubic_bspline(x: Tensor) -> Tensor:
    """The centred cubic B-spline beta3(x) (support |x| < 2)."""
    ax = x.abs()
    inner = 2.0 / 3.0 - ax**2 + ax**3 / 2.0
    outer = (2.0 - ax) ** 3 / 6.0
    return torch.where(ax < 1, inner, torch.where(ax < 2, outer, torch.zeros_like(ax)))


def _spline_rows(positions: Tensor, k: int) -> Tensor:
    """(len(positions), k): row j holds beta3(u_j - m) summed onto the mirrored index of m."""
    base = torch.floor(positions)
    rows = torch.zeros(positions.shape[0], k, dtype=torch.float64)
    for offset in (-1, 0, 1, 2):
        m = base + offset
        rows.scatter_add_(1, _mirror(m.long(), k)[:, None], _cubic_bspline(positions - m)[:, None])
    return rows


def bspline_matrix(positions: Tensor, k: int) -> Tensor:
    """The (len(positions), k) float64 matrix of cubic B-spline interpolation of k samples.

    Row j evaluates the interpolating cubic spline of samples 0 .. k - 1 at coordinate
    ``positions[j]`` (sample units), mirror-symmetric boundaries: it equals
    ``scipy.ndimage.map_coordinates(y, [positions], order=3, mode="mirror")`` for every y.
    Exact at the samples (an integer position gives that sample).
    """
    positions = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)
    if k == 1:
        return torch.ones(positions.shape[0], 1, dtype=torch.float64)
    # the coefficients c solve B c = y, B[i, m] = beta3(i - m) mirrored; values are E c
    gram = _spline_rows(torch.arange(k, dtype=torch.float64), k)
    evaluate = _spline_rows(positions, k)
    return evaluate @ torch.linalg.inv(gram)


def along(x: Tensor, matrix: Tensor, dim: int) -> Tensor:
    """``matrix`` (M, N) applied along dimension ``dim`` of x (size N there -> M), in x's dtype."""
    moved = x.movedim(dim, -1)
    out = moved @ matrix.to(device=x.device, dtype=x.dtype).T
    return out.movedim(-1, dim)


# ----------------------------------------------------------------------------- the operator


@dataclass(frozen=True)
class SliceProfile:
    """The slice profile and spacing of a thick-slice axis, in fine pixels.

    factor: slice spacing / fine pixel (> 1, may be non-integer). thickness: the profile's FWHM
    (gaussian) or width (rect) in fine pixels; None: = factor (contiguous slices, no gap).
    profile: "gaussian", "rect", or samples at integer offsets (odd length, centred).
    """

    factor: float
    thickness: float | None = None
    profile: ProfileKind | tuple[float, ...] = "gaussian"

    def __post_init__(self) -> None:
        if not 1.0 < self.factor <= MAX_FACTOR:
            raise ValueError(f"factor {self.factor:g}: expected 1 < factor <= {MAX_FACTOR:g}")
        if self.thickness is not None and not self.thickness > 0:
            raise ValueError(f"thickness {self.thickness:g}: expected > 0")
        if isinstance(self.profile, str):
            if self.profile not in ("gaussian", "rect"):
                raise ValueError(f"profile {self.profile!r}: 'gaussian', 'rect' or a list of samples")
        else:
            object.__setattr__(self, "profile", check_profile(self.profile, self.factor))

    @property
    def width(self) -> float:
        """The profile's FWHM / width in fine pixels (``thickness``, default ``factor``)."""
        return float(self.thickness if self.thickness is not None else self.factor)

    def count(self, n: int) -> int:
        """The number of thick slices on a fine axis of n pixels."""
        return int(slice_centres(n, self.factor).shape[0])

    def matrix(self, n: int) -> Tensor:
        """D (K, n), float64: the thick slices of a fine axis of n pixels (rows sum to one)."""
        return _matrix(self, int(n))

    def interpolation(self, n: int) -> Tensor:
        """U (n, K), float64: cubic B-spline interpolation of the K thick slices onto the n fine pixels."""
        return _interpolation(self, int(n))

    def pseudo_inverse(self, n: int) -> Tensor:
        """P = D^+ (n, K), float64: ``x + P (y - D x)`` projects onto ``{x : D x = y}``."""
        return _pseudo_inverse(self, int(n))

    def degrade(self, x: Tensor, dim: int) -> Tensor:
        """The thick slices of x along ``dim`` (size n there -> K)."""
        return along(x, self.matrix(x.shape[dim]), dim)

    def interpolate(self, y: Tensor, dim: int, n: int) -> Tensor:
        """Thick slices y (K along ``dim``) B-spline interpolated onto n fine pixels."""
        if y.shape[dim] != self.count(n):
            raise ValueError(f"interpolate: {y.shape[dim]} slices along dim {dim}, {n} fine pixels hold "
                             f"{self.count(n)}")
        return along(y, self.interpolation(n), dim)

    def project(self, x: Tensor, y: Tensor, dim: int) -> Tensor:
        """The orthogonal projection of x onto ``{x : degrade(x, dim) == y}``, in float64, x's dtype."""
        n = x.shape[dim]
        d64, p64 = self.matrix(n).to(x.device), self.pseudo_inverse(n).to(x.device)
        x64 = x.double()
        residual = y.to(device=x.device, dtype=torch.float64) - along(x64, d64, dim)
        return (x64 + along(residual, p64, dim)).to(x.dtype)


def _profile_integrals(profile: SliceProfile, edges: Tensor) -> Tensor:
    """The integral of the profile from -inf to each offset in ``edges`` (any shape; float64)."""
    width = profile.width
    if profile.profile == "gaussian":
        sigma = width / FWHM_PER_SIGMA
        return 0.5 * (1.0 + torch.erf(edges / (sigma * math.sqrt(2.0))))
    return (edges + width / 2).clamp(0.0, width)  # rect


@functools.lru_cache(maxsize=64)
def _matrix(profile: SliceProfile, n: int) -> Tensor:
    centres = slice_centres(n, profile.factor)
    pixels = torch.arange(n, dtype=torch.float64)
    if isinstance(profile.profile, tuple):  # samples at integer offsets: their linear interpolant
        samples = torch.tensor(profile.profile, dtype=torch.float64)
        m = (samples.shape[0] - 1) // 2
        u = pixels[None, :] - centres[:, None] + m  # index into the samples
        clamped = u.clamp(0, 2 * m)
        lo = torch.floor(clamped).clamp(max=2 * m - 1)
        frac = clamped - lo
        value = samples[lo.long()] * (1 - frac) + samples[lo.long() + 1] * frac
        weights = torch.where((u >= 0) & (u <= 2 * m), value, torch.zeros_like(u))
    else:
        edges = pixels - 0.5
        cum = _profile_integrals(profile, torch.cat([edges, edges[-1:] + 1])[None, :] - centres[:, None])
        weights = cum[:, 1:] - cum[:, :-1]
    total = weights.sum(dim=1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError(f"slice profile: a slice of {n} fine pixels has no weight (profile too narrow?)")
    return weights / total


@functools.lru_cache(maxsize=64)
def _interpolation(profile: SliceProfile, n: int) -> Tensor:
    k = profile.count(n)
    positions = (torch.arange(n, dtype=torch.float64) + 0.5) / profile.factor - 0.5
    return bspline_matrix(positions, k)


@functools.lru_cache(maxsize=64)
def _pseudo_inverse(profile: SliceProfile, n: int) -> Tensor:
    return torch.linalg.pinv(_matrix(profile, n))


# ----------------------------------------------------------------------------- the degradation


class SliceProfileConfig(Strict):
    """Thick slices along one image axis: a 1-D slice profile, decimation by a (non-integer) factor.

    The model's LR is the thick-slice image B-spline interpolated back onto the HR grid (so
    ``data.scale`` is 1); see docs/volumes.md.
    """

    name: Literal["slice_profile"] = "slice_profile"
    axis: Literal[0, 1] = 0  # the image axis across the slices: 0 = rows (H), 1 = columns (W)
    factor: float = Field(gt=1, le=MAX_FACTOR)  # slice spacing / pixel
    thickness: float | None = Field(None, gt=0)  # FWHM (gaussian) / width (rect) in pixels; None: = factor
    profile: ProfileKind | list[float] = "gaussian"  # or samples at integer pixel offsets, centred

    @field_validator("profile")
    @classmethod
    def _samples(cls, value: Any, info: Any) -> Any:
        if isinstance(value, list):
            factor = info.data.get("factor")
            check_profile(value, float(factor) if factor else MAX_FACTOR)
        return value


@DEGRADATIONS.register("slice_profile", config=SliceProfileConfig, one_axis=True)
class SliceProfileDegradation(Degradation):
    """``lr = U D hr`` along one image axis: thick slices, interpolated back onto the HR grid.

    hr (B, C, H, W) -> lr (B, C, H, W) (clamped to [0, 1]); :meth:`upsample` is the identity
    (the LR already lies on the HR grid); :meth:`measure` also returns the thick slices
    ``D hr`` (B, C, K, W) for axis 0 (B, C, H, K for axis 1), which slice-axis consistency
    projects onto. Deterministic: the generator is not used.
    """

    name = "slice_profile"

    def __init__(
        self,
        scale: int,
        *,
        factor: float,
        axis: int = 0,
        thickness: float | None = None,
        profile: ProfileKind | Sequence[float] = "gaussian",
        **params: Any,
    ) -> None:
        super().__init__(scale, **params)
        if scale != 1:
            raise ConfigError(f"degradation 'slice_profile': the model grid is the HR grid (data.scale 1), got "
                              f"scale {scale}")
        if axis not in (0, 1):
            raise ConfigError(f"degradation.axis: 0 (rows) or 1 (columns), got {axis}")
        try:
            self.profile = SliceProfile(float(factor), thickness,
                                        profile if isinstance(profile, str) else tuple(profile))
        except ValueError as err:
            raise ConfigError(f"degradation 'slice_profile': {err}") from None
        self.axis = int(axis)

    def __repr__(self) -> str:
        return (f"SliceProfileDegradation(axis={self.axis}, factor={self.profile.factor:g}, "
                f"thickness={self.profile.width:g})")

    @property
    def dim(self) -> int:
        """The tensor dimension across the slices of a (B, C, H, W) batch."""
        return -2 if self.axis == 0 else -1

    def thick(self, hr: Tensor) -> Tensor:
        """The thick slices ``D hr`` (unclamped)."""
        check_image(hr, "hr")
        return self.profile.degrade(hr, self.dim)

    def degrade(self, hr: Tensor, generator: torch.Generator | None) -> Tensor:
        n = hr.shape[self.dim]
        if n < 2 * self.profile.factor:
            raise ValueError(f"slice_profile: an image of {n} pixels across the slices holds fewer than two "
                             f"slices of factor {self.profile.factor:g}")
        return self.profile.interpolate(self.thick(hr), self.dim, n)

    def measure(self, hr: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """(the interpolated LR clamped to [0, 1], the thick slices ``D hr``)."""
        thick = self.thick(hr)
        lr = self.profile.interpolate(thick, self.dim, hr.shape[self.dim])
        return lr.clamp(0.0, 1.0), thick

    def upsample(self, lr: Tensor) -> Tensor:
        """The condition is the LR itself: it already lies on the HR grid."""
        return lr
