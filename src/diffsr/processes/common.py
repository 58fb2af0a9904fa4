"""Helpers shared by the processes: seeded noise, schedule look-ups, Min-SNR weights, dtypes.

Schedules are built in float64 on the CPU and cast on use (:func:`gather`), so a float32 run
and a float64 parity test read the same numbers, each in its own precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from diffsr.core.errors import ConfigError


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: half-precision latents get float32 time inputs and coefficients."""
    return torch.promote_types(dtype, torch.float32)


def randn(
    shape: Sequence[int],
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Standard normal noise; drawn on the generator's device (so a CPU generator gives the same
    numbers whatever ``device`` is), then moved to ``device``."""
    draw_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype).to(device)


def start_noise(zc: Tensor, noise: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """The sampler's starting noise: ``noise`` cast to ``zc``'s device and dtype, else randn like ``zc``."""
    if noise is None:
        return randn(zc.shape, device=zc.device, dtype=zc.dtype, generator=generator)
    return noise.to(device=zc.device, dtype=zc.dtype)


def randint(
    high: int, batch: int, *, device: torch.device | str, generator: torch.Generator | None = None
) -> Tensor:
    """Integers uniform on [0, high) as a float32 tensor (B,) (the integer time steps)."""
    draw_device = generator.device if generator is not None else device
    t = torch.randint(0, high, (batch,), generator=generator, device=draw_device)
    return t.to(device=device, dtype=torch.float32)


def gather(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``table[t]`` for integer-valued float ``t`` (B,), shaped (B, 1, ..., 1) like ``like``.

    ``table`` is a float64 CPU schedule; it is cast to ``like``'s dtype before moving so no
    float64 tensor is needed on the device.
    """
    values = table.to(dtype=like.dtype).to(like.device)[t.round().long().to(like.device)]
    return values.view(-1, *([1] * (like.ndim - 1)))


def check_steps(steps: int, most: int, process: str) -> int:
    """Validate a sampling step count ``1 <= steps <= most``."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"{process}: sample steps must be a positive integer, got {steps!r}")
    if steps > most:
        raise ConfigError(f"{process}: sample steps {steps} exceed the {most} training steps")
    return steps


def min_snr_weight(snr: Tensor, gamma: float, prediction: str) -> Tensor:
    """Min-SNR-gamma weight (Hang et al. 2023) for a variance-preserving parameterisation.

    The x0-space loss weighted by ``min(SNR, gamma)`` rewritten for each target:
    ``min(SNR, g)`` (x0), ``min(SNR, g) / SNR`` (eps), ``min(SNR, g) / (SNR + 1)`` (v).
    Finite for SNR = 0 and SNR = inf (their limits: x0 0 and g, eps 1 and 0, v 0 and 0).
    """
    clipped = snr.clamp(max=gamma)
    if prediction == "x0":
        return clipped
    if prediction == "eps":
        # min(snr, g) / snr == g / max(snr, g): 1 at snr = 0, 0 at snr = inf, never 0/0
        return gamma / snr.clamp(min=gamma)
    if prediction == "v":
        # inf + 1 = inf and g / inf = 0; 0 / 1 = 0
        return clipped / (snr + 1)
    raise ValueError(f"min_snr_weight: unknown prediction {prediction!r}")
