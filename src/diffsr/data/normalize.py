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
- ``minmax``: the min and max of the whole record (all slices).
- ``percentile``: percentiles (default 0.5, 99.5) over the non-zero voxels of the whole
  record (volume or series), as the data MANIFEST advises for MRI; all-zero -> minmax.
- ``window``: an explicit (lo, hi) in file units, e.g. a CT window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from diffsr.core.errors import ConfigError
from diffsr.data.io import Record

Policy = Literal["dtype", "minmax", "percentile", "window"]
POLICIES: tuple[str, ...] = ("dtype", "minmax", "percentile", "window")
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
        """File units -> [0, 1] (clipped)."""
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


def default_policy(record: Record) -> str:
    """"percentile" for NIfTI and DICOM (MRI/CT), "minmax" for float images, else "dtype"."""
    if record.format in ("nifti", "dicom"):
        return "percentile"
    if np.dtype(record.meta.get("dtype", "float32")).kind == "f":
        return "minmax"
    return "dtype"


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
            raise ConfigError("normalization 'window' needs data.window = (low, high) in file units")
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise ConfigError(f"data.window: high must exceed low, got {tuple(window)}")
        return Intensity("window", lo, hi)
    raise ConfigError(f"unknown normalization '{policy}' (choose from {', '.join(POLICIES)})")
