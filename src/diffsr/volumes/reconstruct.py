"""Apply a one-axis model across the slices of a volume, in both through-plane orientations.

The volume is held with the thick axis first, ``(K, A, B)`` in [0, 1]. Orientation 0 takes the
planes ``[:, a, :]`` (images K x B), orientation 1 the planes ``[:, :, b]`` (K x A); each image
is B-spline interpolated along its rows onto the model grid (N rows, :class:`~diffsr.data.
slice_profile.SliceProfile`), super-resolved by the model in batches of ``batch`` planes, and
added into an (N, A, B) accumulator. Memory: the input, one or two accumulators (and one for
the variance with ``samples > 1``), and one batch of planes at a time: never the stack of every
plane's intermediates.

Combination of the two estimates (``combine``):

- ``average`` (default): their mean. With slice consistency on, both satisfy ``D x = y`` and
  so does the mean (D acts along the thick axis only).
- ``fourier``: Fourier burst accumulation (Delbracio and Sapiro 2015, as SMORE combines its
  orientations): the 3-D spectra weighted by ``|F_i|^p / sum_j |F_j|^p`` (p = :data:`FBA_POWER`),
  which keeps, per frequency, mostly the orientation that resolved it. Consistency is then
  re-imposed by one projection along the thick axis.

Slice-axis consistency (``consistency``): the sampler's every clean estimate is projected onto
``{x : D x = y}`` along the rows (decode, project, encode), and the sample once more after the
final clamp, so each orientation's output re-degraded with the slice profile reproduces the
thick slices (to float rounding). The projection may leave the [0, 1] range a little; it is
alternated with clipping (:data:`POCS_ROUNDS` rounds, ending with the projection: both sets hold
the true image, so each round moves no further from it). A feed-forward baseline's output gets
the same projection rounds. The volume is written as computed (a float NIfTI keeps values
outside [0, 1]; integer formats clip to their range); the report gives the residual both as
computed and after clipping to [0, 1].

``samples = N > 1``: N draws per plane; the mean is used, and the per-voxel std of one draw of
the combined estimate is ``sqrt((var_0 + var_1) / 4)``: the two orientations' draws use
independent noise, so their covariance is zero (for ``fourier`` this is the std of the average,
used as an approximation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffsr.data.slice_profile import SliceProfile, along, bspline_matrix
from diffsr.volumes.plan import IsoPlan

log = logging.getLogger(__name__)

__all__ = ["COMBINE", "FBA_POWER", "Reconstruction", "consistency_residual", "fourier_combine", "reconstruct"]

COMBINE = ("average", "fourier")
#: the exponent of Fourier burst accumulation's weights
FBA_POWER = 4.0
#: clip-and-project rounds after the last projection of a sample (POCS; both sets hold the truth)
POCS_ROUNDS = 10
#: planes whose thick slices are all below this (after normalisation) are passed through as zeros
EMPTY_LEVEL = 1e-6

Progress = Callable[[str, int, int], None]


@dataclass
class Reconstruction:
    """A reconstructed volume in [0, 1] units, in the input's axis order, on the output grid."""

    mean: np.ndarray
    std: np.ndarray | None
    seconds: float
    planes: dict[str, int] = field(default_factory=dict)  # processed / passed-through planes
    residual: dict[str, float] = field(default_factory=dict)  # consistency residual on the model grid


def reconstruct(
    model: Any,
    unit: np.ndarray,
    plan: IsoPlan,
    *,
    steps: int | None = None,
    samples: int = 1,
    seed: int = 0,
    consistency: bool = False,
    combine: str = "average",
    batch: int = 8,
    detail: float | None = None,
    progress: Progress | None = None,
) -> Reconstruction:
    """Super-resolve ``unit`` (the volume in [0, 1], input axis order) through-plane with ``model``.

    model: an :class:`~diffsr.model.SRModel` trained with the ``slice_profile`` degradation for
    ``plan.slice_profile``. Returns the combined estimate on the output grid (and its per-voxel
    std with ``samples > 1``), the consistency residual measured on the model grid, the time.
    """
    if combine not in COMBINE:
        raise ValueError(f"combine: one of {COMBINE}, got {combine!r}")
    if samples < 1 or batch < 1:
        raise ValueError(f"samples and batch must be >= 1, got {samples} and {batch}")
    t0 = time.perf_counter()
    lr = np.moveaxis(np.asarray(unit, dtype=np.float32), plan.axis, 0)  # (K, A, B), a view
    k, a, b = lr.shape
    n = plan.n_fine
    profile = plan.slice_profile
    if profile.count(n) != k:
        raise ValueError(f"reconstruct: {k} thick slices, but a model grid of {n} voxels holds {profile.count(n)}")
    run = _PlaneRun(model, profile, n, steps=steps, samples=samples, seed=seed, consistency=consistency,
                    detail=detail)
    sums = [np.zeros((n, a, b), np.float32)]
    if combine == "fourier":
        sums.append(np.zeros((n, a, b), np.float32))
    variance = np.zeros((n, a, b), np.float32) if samples > 1 else None
    planes = {"processed": 0, "passed_through": 0}
    for orientation, count in ((0, a), (1, b)):
        target = sums[orientation % len(sums)]
        for start in range(0, count, batch):
            stop = min(start + batch, count)
            thick = _planes(lr, orientation, start, stop)
            mean, var, done = run(thick, orientation, start)
            planes["processed"] += done
            planes["passed_through"] += (stop - start) - done
            _put(target, mean, orientation, start, stop)
            if variance is not None and var is not None:
                _put(variance, var, orientation, start, stop)
            if progress:
                progress(f"orientation {orientation + 1}/2", stop, count)
    if combine == "fourier":
        fine = fourier_combine(sums[0], sums[1])
        if consistency:
            fine = _project_volume(fine, lr, profile)
    else:
        fine = sums[0]
        fine *= 0.5  # in place: one volume-sized buffer
    del sums
    residual = consistency_residual(fine, lr, profile)
    std = np.sqrt(variance / 4.0) if variance is not None else None
    mean_out, std_out = _to_output(fine, plan), (_to_output(std, plan) if std is not None else None)
    mean_out = np.moveaxis(mean_out, 0, plan.axis)
    # the B-spline resampling of a std may dip below zero next to a jump: a std is never negative
    std_out = np.moveaxis(np.maximum(std_out, 0.0), 0, plan.axis) if std_out is not None else None
    return Reconstruction(mean_out, std_out, time.perf_counter() - t0, planes, residual)


def _planes(lr: np.ndarray, orientation: int, start: int, stop: int) -> Tensor:
    """Planes start..stop of an orientation as a batch (b, 1, K, W) of thick-slice images."""
    block = lr[:, start:stop, :] if orientation == 0 else lr[:, :, start:stop]
    block = np.transpose(block, (1, 0, 2) if orientation == 0 else (2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(block))[:, None]


def _put(target: np.ndarray, images: Tensor, orientation: int, start: int, stop: int) -> None:
    """Add a batch of model-grid planes (b, 1, N, W) into the (N, A, B) accumulator."""
    planes = images[:, 0].cpu().numpy()
    if orientation == 0:
        target[:, start:stop, :] += np.transpose(planes, (1, 0, 2))
    else:
        target[:, :, start:stop] += np.transpose(planes, (1, 2, 0))


class _PlaneRun:
    """Super-resolves batches of thick-slice planes with one model (samples, seeds, consistency)."""

    def __init__(self, model: Any, profile: SliceProfile, n: int, *, steps: int | None, samples: int, seed: int,
                 consistency: bool, detail: float | None) -> None:
        self.model, self.profile, self.n = model, profile, n
        self.steps, self.samples, self.seed = steps, samples, seed
        self.consistency, self.detail = consistency, detail
        self.device = next(iter(model.parameters()), torch.empty(0)).device

    @torch.no_grad()
    def __call__(self, thick: Tensor, orientation: int, start: int) -> tuple[Tensor, Tensor | None, int]:
        """(mean (b, 1, N, W), variance or None, planes run through the model) of a batch."""
        b, _, _, w = thick.shape
        mean = torch.zeros(b, 1, self.n, w)
        var = torch.zeros_like(mean) if self.samples > 1 else None
        active = thick.flatten(1).amax(dim=1) > EMPTY_LEVEL
        if not bool(active.any()):
            return mean, var, 0
        y = thick[active].to(self.device)
        cond = along(y, self.profile.interpolation(self.n).float(), -2).clamp(0.0, 1.0)
        if self.samples == 1:
            mean[active] = self._one(cond, y, orientation, start, 0).float().cpu()
            return mean, var, int(active.sum())
        draws = torch.stack([self._one(cond, y, orientation, start, s) for s in range(self.samples)])
        mean[active] = draws.mean(0).float().cpu()
        if var is not None:
            var[active] = draws.var(0, correction=1).float().cpu()
        return mean, var, int(active.sum())

    def _one(self, cond: Tensor, y: Tensor, orientation: int, start: int, draw: int) -> Tensor:
        model = self.model
        if model.is_baseline:
            sr = model.sample(cond, lr=cond)
        else:
            # every (draw, orientation, batch) has its own seed: the result does not depend on the order
            seed = np.random.SeedSequence([self.seed, draw, orientation, start]).generate_state(1, np.uint64)[0]
            generator = torch.Generator(device=self.device).manual_seed(int(seed) & ((1 << 63) - 1))
            hook = _slice_hook(model, self.profile, y, self.n) if self.consistency else None
            sr = model.sample(cond, steps=self.steps, generator=generator, x0_hook=hook, detail=self.detail)
        if self.consistency:  # POCS: alternate the projection with clipping to [0, 1], ending with the projection
            sr = self.profile.project(sr, y, -2)
            for _ in range(POCS_ROUNDS):
                sr = self.profile.project(sr.clamp(0.0, 1.0), y, -2)
        return sr


def _slice_hook(model: Any, profile: SliceProfile, y: Tensor, n: int) -> Callable[[Tensor, Tensor, Any], Tensor]:
    """The sampler's x0 hook: decode, project the valid n x W region onto ``D x = y`` along the rows, encode."""
    codec = model.codec
    w = y.shape[-1]

    def hook(z0_hat: Tensor, t: Tensor, zc: Any) -> Tensor:
        x = codec.decode(zc.with_z(z0_hat)).clone()
        x[..., :n, :w] = profile.project(x[..., :n, :w], y, -2)
        return codec.encode(x).z

    return hook


def fourier_combine(first: np.ndarray, second: np.ndarray, power: float = FBA_POWER) -> np.ndarray:
    """Fourier burst accumulation of two estimates: spectra weighted by ``|F_i|^p / sum_j |F_j|^p``."""
    f0 = np.fft.rfftn(first)
    f1 = np.fft.rfftn(second)
    w0, w1 = np.abs(f0) ** power, np.abs(f1) ** power
    total = w0 + w1
    total[total == 0] = 1.0
    fused = (w0 * f0 + w1 * f1) / total
    return np.fft.irfftn(fused, s=first.shape, axes=(0, 1, 2)).astype(np.float32)


def _project_volume(fine: np.ndarray, lr: np.ndarray, profile: SliceProfile, chunk: int = 16) -> np.ndarray:
    """``fine`` (N, A, B) projected onto ``D x = lr`` along axis 0, ``chunk`` planes at a time."""
    for start in range(0, fine.shape[1], chunk):
        x = torch.from_numpy(fine[:, start : start + chunk])
        y = torch.from_numpy(np.ascontiguousarray(lr[:, start : start + chunk]))
        fine[:, start : start + chunk] = profile.project(x, y, 0).numpy()
    return fine


def consistency_residual(fine: np.ndarray, lr: np.ndarray, profile: SliceProfile, chunk: int = 16
                         ) -> dict[str, float]:
    """How far ``fine`` (N, A, B), re-degraded with the profile, is from the thick slices ``lr`` (K, A, B).

    RMS and max of ``D x - y`` over the foreground (thick voxels above 0.05), for x as computed
    (what a float volume holds) and for x clipped to [0, 1]; [0, 1] units.
    """
    d = profile.matrix(fine.shape[0]).float()
    stats = {"raw": [0.0, 0.0], "clipped": [0.0, 0.0]}
    count = 0
    for start in range(0, fine.shape[1], chunk):
        x = torch.from_numpy(np.ascontiguousarray(fine[:, start : start + chunk]))
        y = torch.from_numpy(np.ascontiguousarray(lr[:, start : start + chunk]))
        mask = y > 0.05
        count += int(mask.sum())
        for key, value in (("raw", x), ("clipped", x.clamp(0, 1))):
            r = (along(value, d, 0) - y)[mask]
            if r.numel():
                stats[key][0] += float(r.double().pow(2).sum())
                stats[key][1] = max(stats[key][1], float(r.abs().max()))
    out: dict[str, float] = {"foreground_voxels": float(count)}
    for key, (sq, mx) in stats.items():
        out[f"rms_{key}"] = (sq / max(count, 1)) ** 0.5
        out[f"max_{key}"] = mx
    return out


def _to_output(fine: np.ndarray, plan: IsoPlan, chunk: int = 16) -> np.ndarray:
    """The model grid (N, A, B) resampled to the output grid (n_out, A, B) by cubic B-splines (or as is)."""
    if plan.n_out == plan.n_fine and abs(plan.out_spacing - plan.fine) < 1e-9:
        return fine
    positions = (np.arange(plan.n_out) + 0.5) * plan.out_spacing / plan.fine - 0.5
    matrix = bspline_matrix(torch.from_numpy(positions), plan.n_fine).float()
    out = np.empty((plan.n_out, *fine.shape[1:]), np.float32)
    for start in range(0, fine.shape[1], chunk):
        out[:, start : start + chunk] = along(torch.from_numpy(fine[:, start : start + chunk]), matrix, 0).numpy()
    return out
