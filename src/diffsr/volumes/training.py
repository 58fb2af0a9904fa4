"""Self-supervised training pairs from the scan itself, and the training run (SMORE / ECLARE style).

The in-plane slices of a thick-slice volume (the planes across its thick axis) are fine in both
directions. :func:`training_slices` takes them, resampled with cubic B-splines onto the model
grid when an in-plane axis is coarser than the finest (so one pixel means the same distance in
both directions), and keeps those with enough foreground. :func:`iso_config` turns any preset
into a one-axis model for the plan: ``data.degradation`` = ``slice_profile`` with the plan's
factor, thickness and profile along image axis 0 (random flips and transpositions of the
patches before degrading train both in-plane directions), ``data.scale`` 1, the time budget.
:func:`train_iso` trains it on those slices (:class:`~diffsr.train.trainer.Trainer` with
in-memory datasets).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffsr.config import Config, load_config
from diffsr.data.datasets import ImageItem, SRDataset
from diffsr.data.degrade import build_degradation
from diffsr.data.loading import foreground_fraction
from diffsr.data.slice_profile import GRID_TOLERANCE, along, bspline_matrix
from diffsr.volumes.plan import IsoPlan

log = logging.getLogger(__name__)

__all__ = ["iso_config", "resample_axis", "train_iso", "training_slices"]

#: an in-plane axis whose spacing is within this relative difference of the model grid is used as is
SAME_SPACING = 0.01


def resample_axis(x: np.ndarray, axis: int, spacing: float, target: float) -> np.ndarray:
    """x resampled along ``axis`` from ``spacing`` to ``target`` mm (cubic B-spline, same first edge)."""
    n = x.shape[axis]
    m = max(1, math.floor(n * spacing / target + GRID_TOLERANCE))
    positions = (np.arange(m) + 0.5) * target / spacing - 0.5
    matrix = bspline_matrix(torch.from_numpy(positions), n).float()
    return along(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), matrix, axis).numpy()


def training_slices(unit: np.ndarray, plan: IsoPlan, *, min_foreground: float = 0.05) -> list[np.ndarray]:
    """The in-plane slices of ``unit`` (a [0, 1] volume, input axis order) on the model grid, (1, H, W) each.

    Axis order within a slice: the two in-plane axes in file order. Slices whose foreground
    fraction (pixels above 0.05) is below ``min_foreground`` are left out.
    """
    stack = np.moveaxis(np.asarray(unit, dtype=np.float32), plan.axis, 0)  # (K, H, W)
    for dim, vol_axis in ((1, plan.in_plane[0]), (2, plan.in_plane[1])):
        d = plan.spacing[vol_axis]
        if abs(d - plan.fine) > SAME_SPACING * plan.fine:
            log.info("training slices: in-plane axis %d resampled from %g to %g mm", vol_axis, d, plan.fine)
            stack = np.clip(resample_axis(stack, dim, d, plan.fine), 0.0, 1.0)
    keep = foreground_fraction(stack[:, None]) >= min_foreground
    return [np.ascontiguousarray(stack[i][None]) for i in np.flatnonzero(keep)]


def iso_config(preset: str, plan: IsoPlan, *, source: str | Path | None = None, time_limit: float | None = None,
               train_steps: int | None = None, overrides: list[str] | None = None) -> Config:
    """``preset`` made into the one-axis model of ``plan`` (any preset: diffusion or a baseline).

    source: recorded as ``data.train`` (the volume the slices come from); overrides: ``--set``
    items applied after (e.g. ``train.lr=1e-3``).
    """
    deg = [
        "data.scale=1",
        "data.degradation.name=slice_profile",
        "data.degradation.axis=0",
        f"data.degradation.factor={plan.factor!r}",
        f"data.degradation.thickness={plan.thickness / plan.fine!r}",
        f"data.degradation.profile={_yaml_profile(plan.profile)}",
        "data.channels=1",
        f"data.slice_axis={plan.axis}",
    ]
    budget = []
    if time_limit is not None:
        budget.append(f"train.time_limit={float(time_limit)!r}")
    if train_steps is not None:
        budget.append(f"train.steps={int(train_steps)}")
    cfg = load_config(preset, deg + budget + list(overrides or []))
    if source is not None:  # set directly: a path is not a YAML scalar
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train": str(source)})})
    return cfg


def _yaml_profile(profile: str | tuple[float, ...]) -> str:
    if isinstance(profile, str):
        return profile
    return "[" + ", ".join(repr(float(v)) for v in profile) + "]"


def train_iso(config: Config, slices: list[np.ndarray], run_dir: Path, *, progress: bool = False) -> Any:
    """Train ``config`` on ``slices`` (from :func:`training_slices`); returns the TrainResult."""
    from diffsr.core.errors import DataError
    from diffsr.train.trainer import Trainer

    if not slices:
        raise DataError("no in-plane slice has enough foreground to train on (data.min_foreground)")
    data = config.data
    degradation = build_degradation(data.degradation, 1)
    items = [ImageItem(f"slice{i}", hr=s) for i, s in enumerate(slices)]
    repeats = max(1, math.ceil(data.batch_size / len(items)))
    train = SRDataset(items, scale=1, patch_size=data.patch_size, degradation=degradation, train=True,
                      seed=config.train.seed, repeats=repeats)
    val = SRDataset([], scale=1, patch_size=data.patch_size, degradation=degradation, train=False,
                    seed=config.train.seed)
    log.info("iso: training %s on %d in-plane slices (%s)", config.name, len(items), degradation)
    return Trainer(config, run_dir, progress=progress, datasets=(train, val)).fit()
