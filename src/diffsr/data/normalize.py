"""Intensity normalisation: file units <-> [0, 1], recorded so that writers can invert it.

An :class:`Intensity` is the affine map ``u = (a - lo) / (hi - lo)`` followed by clipping to
[0, 1] (for every policy: images inside diffsr live in [0, 1]). ``inverse`` is
``a = lo + u (hi - lo)``; it is exact for values that were inside [lo, hi]. Values outside
(the top 0.5 % of brain voxels under the default percentile policy, anything outside a CT
window) are saturated at lo/hi and come back as lo/hi.

Policies (:func:`fit_intensity`):

- ``dtype``: the representable range of the on-disk integers in file units: 0..255 (uint8),
  0..65535 (uint16), 0..2^bits - 1 for DICOM ``BitsStored`` (12 bits -> 4095), mapped through
  the rescale slope/intercept; float data has no such range and falls back to ``minmax``.
- ``minmax``: the min and max of the whole record (all slices). Nothing is clipped, so the
  inverse is exact: the policy for data whose units matter (thermal counts, Hounsfield units).
- ``percentile``: percentiles (default 0.5, 99.5) over the non-zero voxels of the whole
  record (volume or series), as the data MANIFEST advises for MRI; all-zero -> minmax.
- ``window``: an explicit (lo, hi) in file units, e.g. a CT window; without one, a DICOM's own
  WindowCenter / WindowWidth.

``auto`` (:func:`default_policy`) picks per record: ``dtype`` for 8-bit images (they fill their
type), ``minmax`` for wider integers (a uint16 holding 14-bit thermal counts 7000..9000, an int16
in HU, int32: stretching the type's whole range would squeeze the image into a sliver of [0, 1]),
for float images and for CT (a DICOM of modality CT, or a volume whose air sits at -1000 HU: the
full range, so bone is never clipped), and ``percentile`` for other NIfTI / DICOM (MRI).
:func:`clipped` measures what a policy saturates; :func:`check_fits` refuses (or warns about)
a policy that clearly does not fit the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from diffsr.core.errors import ConfigError
from diffsr.data.io import Record

Policy = Literal["auto", "dtype", "minmax", "percentile", "window"]
POLICIES: tuple[str, ...] = ("auto", "dtype", "minmax", "percentile", "window")
ArrayT = TypeVar("ArrayT")


@dataclass(frozen=True)
class Intensity:
    """``forward(a) = clip((a - lo) / (hi - lo), 0, 1)``, ``inverse(u) = lo + u (hi - lo)``.

    Works on numpy arrays and torch tensors alike. ``hi > lo`` always (a constant image gets
    ``hi = lo + 1``, so it maps to 0 and back).
    """

    policy: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.lo) or not np.isfinite(self.hi):
            raise ValueError(f"Intensity: lo and hi must be finite, got {self.lo}, {self.hi}")
        if self.hi <= self.lo:
            raise ValueError(f"Intensity: hi must exceed lo, got lo={self.lo}, hi={self.hi}")

    def forward(self, a: ArrayT) -> ArrayT:
        """File units -> [0, 1] (clipped). A float32 numpy array is mapped a slice at a time in float64
        (``a - lo`` of a range near +-3e38 would overflow float32) and returned as float32."""
        if isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim >= 1:
            out = np.empty(a.shape, dtype=np.float32)
            span = self.hi - self.lo
            for i in range(a.shape[0]):
                out[i] = ((a[i].astype(np.float64) - self.lo) / span).clip(0.0, 1.0)
            return out  # type: ignore[return-value]
        return ((a - self.lo) / (self.hi - self.lo)).clip(0.0, 1.0)  # type: ignore[operator,attr-defined]

    def inverse(self, u: ArrayT) -> ArrayT:
        """[0, 1] -> file units (no clipping: callers cast to the on-disk dtype)."""
        return u * (self.hi - self.lo) + self.lo  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"policy": self.policy, "lo": float(self.lo), "hi": float(self.hi)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Intensity:
        """Inverse of :meth:`to_dict`."""
        return cls(policy=str(data["policy"]), lo=float(data["lo"]), hi=float(data["hi"]))


def _make(policy: str, lo: float, hi: float) -> Intensity:
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return Intensity(policy, lo, hi)


#: CT detection: a volume is CT when at least this share of its voxels is air, -1000 +- 100 HU
CT_AIR_FRACTION = 0.01


def looks_like_ct(record: Record) -> bool:
    """True for a DICOM of modality CT, or a NIfTI / TIFF / NPY volume in Hounsfield units: at least
    :data:`CT_AIR_FRACTION` of its values are air (-1100..-900) and some reach soft tissue (> 0)."""
    modality = str(record.meta.get("modality", "")).upper()
    if record.format == "dicom":
        return modality == "CT"
    a = record.array
    if a.size == 0 or float(a.min()) > -900 or float(a.max()) <= 0:
        return False
    air = np.count_nonzero((a >= -1100) & (a <= -900))
    return air >= CT_AIR_FRACTION * a.size


def default_policy(record: Record) -> str:
    """The ``auto`` policy of ``record`` (see the module docstring): "dtype" for 8-bit integer images,
    "minmax" for wider integers, floats and CT, "percentile" for other NIfTI and DICOM (MRI)."""
    if looks_like_ct(record):
        return "minmax"
    if record.format in ("nifti", "dicom"):
        return "percentile"
    dtype = np.dtype(record.meta.get("dtype", "float32"))
    if dtype.kind in "ui" and dtype.itemsize == 1:
        return "dtype"
    return "minmax"


def describe_policy(record: Record, policy: str) -> str:
    """Why ``auto`` chose ``policy`` for ``record``, in a few words (for the output's record)."""
    dtype = record.meta.get("dtype", "float32")
    if looks_like_ct(record):
        return "CT (Hounsfield units): the full range, nothing clipped"
    if policy == "percentile":
        return "MRI volume / series: percentiles of the non-zero voxels"
    if policy == "dtype":
        return f"{dtype}: the type's range"
    return f"{dtype}: the data's own range, nothing clipped"


@dataclass(frozen=True)
class Clipping:
    """What an :class:`Intensity` saturates in a record: the share of values below ``lo`` / above
    ``hi``, and the record's own min / max (they come back as lo / hi after the inverse)."""

    fraction_low: float
    fraction_high: float
    data_min: float
    data_max: float

    @property
    def fraction(self) -> float:
        """The share of values outside [lo, hi]."""
        return self.fraction_low + self.fraction_high

    def to_dict(self) -> dict[str, float]:
        """JSON-serialisable form."""
        return {"fraction_low": self.fraction_low, "fraction_high": self.fraction_high,
                "data_min": self.data_min, "data_max": self.data_max}


def clipped(record: Record, intensity: Intensity) -> Clipping:
    """The :class:`Clipping` of ``intensity`` on ``record``'s values."""
    a = record.array
    n = max(1, a.size)
    return Clipping(float(np.count_nonzero(a < intensity.lo)) / n, float(np.count_nonzero(a > intensity.hi)) / n,
                    float(a.min()) if a.size else 0.0, float(a.max()) if a.size else 0.0)


#: 'dtype' clearly does not fit integer data that spans less than this share of its type's range
DTYPE_MIN_USE = 1 / 8


def check_fits(record: Record, intensity: Intensity) -> str | None:
    """Why ``intensity`` clearly does not fit ``record`` (None when it does).

    - ``dtype`` on integers wider than 8 bits that use less than :data:`DTYPE_MIN_USE` of their
      type's range (14-bit counts in a uint16, HU in an int16): the image would be a sliver of
      [0, 1]. 8-bit images are not flagged: the type's range is their convention, and a dark,
      low-contrast or constant photo is as valid as any;
    - ``window`` / ``percentile`` that saturate more than half the values.
    """
    a = record.array
    if intensity.policy == "dtype" and a.size and np.dtype(record.meta.get("dtype", "float32")).itemsize > 1:
        lo, hi = float(a.min()), float(a.max())
        used = (hi - lo) / (intensity.hi - intensity.lo)
        if used < DTYPE_MIN_USE:
            return (f"values {lo:g}..{hi:g} use {100 * used:.1f} % of the range {intensity.lo:g}..{intensity.hi:g} "
                    "that normalization 'dtype' stretches to [0, 1]")
    if intensity.policy in ("window", "percentile"):
        cut = clipped(record, intensity)
        if cut.fraction > 0.5:
            return (f"{100 * cut.fraction:.0f} % of the values ({cut.data_min:g}..{cut.data_max:g}) lie outside the "
                    f"{intensity.policy} {intensity.lo:g}..{intensity.hi:g}")
    return None


def fit_intensity(
    record: Record,
    policy: str = "dtype",
    percentiles: tuple[float, float] = (0.5, 99.5),
    window: tuple[float, float] | None = None,
) -> Intensity:
    """The :class:`Intensity` of ``record`` under ``policy`` (see the module docstring).

    Statistics are taken over the whole record (every slice of a volume or series), so all
    slices of one volume share one mapping. Raises ConfigError for an unknown policy or a
    missing / empty window.
    """
    a = record.array
    if policy == "auto":
        policy = default_policy(record)
    if policy == "dtype":
        rng = record.meta.get("range")
        if rng is None:  # float data: no representable range
            return _make("minmax", float(a.min()), float(a.max()))
        return _make("dtype", rng[0], rng[1])
    if policy == "minmax":
        return _make("minmax", float(a.min()), float(a.max()))
    if policy == "percentile":
        p_lo, p_hi = percentiles
        if not 0 <= p_lo < p_hi <= 100:
            raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        values = a[a != 0]
        if values.size == 0:
            return _make("percentile", float(a.min()), float(a.max()))
        lo, hi = np.percentile(values, [p_lo, p_hi])
        return _make("percentile", float(lo), float(hi))
    if policy == "window":
        if window is None:
            window = record.meta.get("window")  # a DICOM's WindowCenter / WindowWidth
        if window is None:
            raise ConfigError(f"{record.path}: normalization 'window' needs a window (--window LOW,HIGH or "
                              "data.window) in file units; the file recommends none")
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise ConfigError(f"data.window: high must exceed low, got {tuple(window)}")
        return Intensity("window", lo, hi)
    raise ConfigError(f"unknown normalization '{policy}' (choose from {', '.join(POLICIES)})")
