"""Files -> normalised 2-D images: the loading shared by the training datasets and evaluation.

Every file is read (:mod:`diffsr.data.io`), normalised to [0, 1] with one
:class:`~diffsr.data.normalize.Intensity` per file or volume, converted to the configured
number of channels and split into 2-D images (a volume gives its slices, skipping slices whose
foreground fraction, the share of pixels above 0.05, is below ``min_foreground``). Randomness
of item ``i`` in epoch ``e`` comes from a generator seeded by (seed, e, i) (:func:`_generator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffsr.core.errors import DataError
from diffsr.data.io import Record, read
from diffsr.data.normalize import Intensity, default_policy, fit_intensity

#: the smallest LR side accepted: an HR image needs sides >= MIN_LR_SIDE * scale
MIN_LR_SIDE = 4
#: a pixel counts as foreground when its normalised value exceeds this
FOREGROUND_LEVEL = 0.05
#: BT.601 luma weights for RGB -> grey
LUMA = (0.299, 0.587, 0.114)


def to_channels(unit: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) -> (N, channels, H, W): RGB -> grey by BT.601 luma, grey -> RGB by repetition."""
    c = unit.shape[1]
    if c == channels:
        return unit
    if c == 3 and channels == 1:
        w = np.asarray(LUMA, dtype=unit.dtype).reshape(1, 3, 1, 1)
        return (unit * w).sum(axis=1, keepdims=True)
    if c == 1 and channels == 3:
        return np.repeat(unit, 3, axis=1)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def foreground_fraction(unit: np.ndarray) -> np.ndarray:
    """Per-slice share of pixels above :data:`FOREGROUND_LEVEL` for (N, C, H, W) -> (N,)."""
    return (unit.max(axis=1) > FOREGROUND_LEVEL).mean(axis=(-2, -1))


def check_size(name: str, h: int, w: int, scale: int) -> None:
    """DataError unless an HR image of h x w leaves an LR of at least MIN_LR_SIDE pixels a side."""
    need = MIN_LR_SIDE * scale
    if h < need or w < need:
        raise DataError(f"{name}: image {h}x{w} (HxW) is smaller than scale {scale} needs ({need}x{need})")


def _generator(seed: int, epoch: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


@dataclass
class _Loaded:
    path: Path
    record: Record
    intensity: Intensity
    unit: np.ndarray  # (N, C, H, W) in [0, 1]
    slices: list[int]  # kept slice indices


def _load(
    path: Path,
    *,
    channels: int,
    normalization: str | None,
    percentiles: tuple[float, float],
    window: tuple[float, float] | None,
    slice_axis: int,
    volume_index: int | None,
    min_foreground: float,
    nan_policy: str = "error",
    intensity: Intensity | None = None,
) -> _Loaded:
    record = read(path, slice_axis=slice_axis, volume_index=volume_index, nan_policy=nan_policy)  # type: ignore[arg-type]
    if intensity is None:
        policy = normalization or default_policy(record)
        intensity = fit_intensity(record, policy, percentiles=percentiles, window=window)
    unit = to_channels(intensity.forward(record.array), channels).astype(np.float32)
    slices = list(range(unit.shape[0]))
    if len(slices) > 1:
        frac = foreground_fraction(unit)
        slices = [i for i in slices if frac[i] >= min_foreground]
        if not slices:
            raise DataError(
                f"{path}: no slice has a foreground fraction >= min_foreground {min_foreground} "
                f"(largest {float(frac.max()):.3f})"
            )
    return _Loaded(path, record, intensity, unit, slices)


def _slice_name(loaded: _Loaded, index: int) -> str:
    name = loaded.record.name
    return f"{name}_s{index:04d}" if loaded.unit.shape[0] > 1 else name
