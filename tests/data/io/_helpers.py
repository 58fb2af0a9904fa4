"""Shared by the reader / writer tests."""

from __future__ import annotations

import numpy as np

from diffsr.data.io import Record
from diffsr.data.normalize import Intensity, fit_intensity


def unit_of(record: Record, policy: str = "minmax") -> tuple[np.ndarray, Intensity]:
    intensity = fit_intensity(record, policy)
    return intensity.forward(record.array.astype(np.float64)), intensity
