"""Evaluation items: whole 2-D images (or slices) with their LR, cropped to a multiple of the scale.

:func:`load_eval_items` loads every input under a path as :mod:`diffsr.data.loading` does for
training, and makes each LR deterministically (or reads it from an LR folder). See docs/data.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffsr.core.color import Y_OFFSET, Y_WEIGHTS
from diffsr.core.errors import DataError
from diffsr.data.degrade import DEGRADATIONS, BicubicDegradation, Degradation, build_degradation
from diffsr.data.io import Record, list_inputs
from diffsr.data.loading import _generator, _load, _Loaded, _slice_name, check_size
from diffsr.data.normalize import Intensity

#: a registered degradation's config model (see :mod:`diffsr.data.degrade`)
DegradationConfig = Any


@dataclass
class EvalItem:
    """An evaluation image: HR (1, C, H, W) cropped to a multiple of the scale, LR (1, C, H/s, W/s).

    record and intensity describe the source file (shared by every slice of a volume; None
    for items made in memory); ``slice_index`` is the slice within the record; ``paired`` is
    True when LR came from a file; items sharing ``volume`` are slices of one volume (the
    evaluation report shows them as a montage). ``measurement``: the raw measurement behind a
    simulated LR when it is not the LR image itself (the complex k-space of the ``kspace``
    degradation): data consistency projects onto it.
    """

    name: str
    hr: Tensor
    lr: Tensor
    record: Record | None = None
    intensity: Intensity | None = None
    slice_index: int | None = 0
    paired: bool = False
    volume: str | None = None
    measurement: Tensor | None = None


def _as_degradation(degradation: Degradation | DegradationConfig | str | None, scale: int) -> Degradation:
    if degradation is None:
        return BicubicDegradation(scale)
    if isinstance(degradation, Degradation):
        return degradation
    if isinstance(degradation, str):
        return DEGRADATIONS.build(degradation, scale=scale)
    return build_degradation(degradation, scale)


def is_rgb(record: Record | None) -> bool:
    """True when ``record`` holds RGB data ((N, 3, H, W))."""
    array = getattr(record, "array", None)
    return array is not None and array.ndim == 4 and array.shape[1] == 3


def _eval_y(loaded: _Loaded, channels: int) -> _Loaded:
    """For 1-channel evaluation of an RGB file: the HR becomes the BT.601 studio-swing Y of the
    RGB (:mod:`diffsr.core.color`, the metrics' ``rgb_to_y``; in [16/255, 235/255]) instead of
    the training loader's full-range luma."""
    if channels != 1 or not is_rgb(loaded.record):
        return loaded
    rgb = loaded.intensity.forward(loaded.record.array).astype(np.float64)
    w = np.asarray(Y_WEIGHTS, dtype=np.float64).reshape(1, 3, 1, 1)
    y = ((rgb * w).sum(axis=1, keepdims=True) + Y_OFFSET) / 255.0
    return _Loaded(loaded.path, loaded.record, loaded.intensity, y.astype(np.float32), loaded.slices)


def load_eval_items(
    path: str | Path,
    scale: int,
    channels: int = 1,
    *,
    degradation: Degradation | DegradationConfig | str | None = None,
    normalization: str | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    window: tuple[float, float] | None = None,
    slice_axis: int = 2,
    volume_index: int | None = None,
    min_foreground: float = 0.05,
    max_slices: int | None = None,
    lr_dir: str | Path | None = None,
    seed: int = 0,
    crop: int | None = None,
) -> list[EvalItem]:
    """Evaluation / demo items for every input under ``path`` (files, volumes, DICOM series).

    Each 2-D image (each kept slice of a volume; ``max_slices`` evenly spaced ones at most)
    becomes an :class:`EvalItem` whose HR is cropped at the bottom/right to a multiple of
    ``scale`` and whose LR is made by ``degradation`` (default bicubic) with a generator
    seeded by (seed, 0, item number), so it is deterministic; or read from ``lr_dir`` (same file
    name; sizes checked). ``normalization`` None uses :func:`default_policy` per file.
    ``crop``: keep the centre ``crop`` x ``crop`` of each HR (rounded down to a multiple of
    ``scale``; images smaller than that stay whole) before the LR is made; with ``lr_dir`` the
    matching LR region is cut out.
    With ``channels=1`` an RGB file's HR (and a paired LR file) is its BT.601 studio-swing Y,
    ``(65.481 R + 128.553 G + 24.966 B + 16) / 255`` (the metrics' ``rgb_to_y``, the BasicSR
    convention), not the training loader's full-range luma.
    """
    if crop is not None and crop < scale:
        raise DataError(f"crop: {crop} is smaller than the scale {scale}")
    deg = _as_degradation(degradation, scale)
    items: list[EvalItem] = []
    for p in list_inputs(path):
        loaded = _eval_y(_load(p, channels=channels, normalization=normalization, percentiles=percentiles,
                               window=window, slice_axis=slice_axis, volume_index=volume_index,
                               min_foreground=min_foreground), channels)
        lr_loaded = None
        if lr_dir is not None:
            lr_path = Path(lr_dir) / p.name
            if not lr_path.exists():
                raise DataError(f"{lr_path}: no LR file for {p} in lr_dir")
            lr_loaded = _eval_y(_load(lr_path, channels=channels, normalization=None, percentiles=percentiles,
                                      window=window, slice_axis=slice_axis, volume_index=volume_index,
                                      min_foreground=0.0, intensity=loaded.intensity), channels)
        for i in _pick_slices(loaded.slices, max_slices):
            items.append(_eval_item(p, loaded, lr_loaded, i, scale=scale, crop=crop, deg=deg, seed=seed,
                                    number=len(items)))
    return items


def _pick_slices(slices: list[int], max_slices: int | None) -> list[int]:
    """``slices``, or ``max_slices`` of them evenly spaced (first and last included)."""
    if max_slices is not None and len(slices) > max_slices:
        picks = np.linspace(0, len(slices) - 1, max_slices).round().astype(int)
        slices = [slices[i] for i in sorted(set(picks.tolist()))]
    return slices


def _crop_box(h: int, w: int, scale: int, crop: int | None) -> tuple[int, int, int, int]:
    """(y0, x0, height, width) of the HR kept: h x w cut at the bottom/right to a multiple of the
    scale, then its centre ``crop`` x ``crop`` (a multiple of the scale) when it is larger."""
    y0 = x0 = 0
    ch, cw = h - h % scale, w - w % scale
    if crop is not None:
        c = crop - crop % scale
        # centre, on the LR grid so that a paired LR file is cut at the same place
        if ch > c:
            y0, ch = (ch - c) // (2 * scale) * scale, c
        if cw > c:
            x0, cw = (cw - c) // (2 * scale) * scale, c
    return y0, x0, ch, cw


def _eval_item(p: Path, loaded: _Loaded, lr_loaded: _Loaded | None, i: int, *, scale: int, crop: int | None,
               deg: Degradation, seed: int, number: int) -> EvalItem:
    """Slice ``i`` of ``loaded`` as item ``number``: the LR cut from ``lr_loaded`` at the HR's crop,
    or made by ``deg`` with the generator seeded by (seed, 0, number)."""
    unit = loaded.unit[i]
    h, w = unit.shape[-2:]
    where = str(p) + ("" if loaded.unit.shape[0] == 1 else f" slice {i}")
    check_size(where, h, w, scale)
    y0, x0, ch, cw = _crop_box(h, w, scale, crop)
    hr = torch.from_numpy(np.ascontiguousarray(unit[:, y0 : y0 + ch, x0 : x0 + cw]))[None]
    if lr_loaded is not None:
        lr_np = lr_loaded.unit[i]
        if lr_np.shape[-2] * scale != h - h % scale or lr_np.shape[-1] * scale != w - w % scale:
            raise DataError(
                f"{p}: HR {h}x{w} is not {scale} x the LR {lr_np.shape[-2]}x{lr_np.shape[-1]} "
                f"of {lr_loaded.path}"
            )
        ly, lx = y0 // scale, x0 // scale
        lr_np = lr_np[:, ly : ly + ch // scale, lx : lx + cw // scale]
        lr = torch.from_numpy(np.ascontiguousarray(lr_np))[None]
    measurement = None
    if lr_loaded is None:
        lr, measurement = deg.measure(hr, _generator(seed, 0, number))
    volume = p.name if loaded.unit.shape[0] > 1 else None
    return EvalItem(_slice_name(loaded, i), hr, lr, loaded.record, loaded.intensity, i, volume=volume,
                    paired=lr_loaded is not None, measurement=measurement)
