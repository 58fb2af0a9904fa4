"""Shared by the process and sampler tests: float64 data, the numpy schedules (DESIGN §3) and an
oracle recorder.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

F64 = torch.float64
SHAPE = (3, 2, 8, 8)


def data(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> tuple[Tensor, Tensor, Tensor]:
    """(z0, zc, noise) in float64; zc is z0 plus a smooth-ish offset, like an encoded LR image."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(shape, generator=g, dtype=F64)
    zc = z0 + 0.5 * torch.randn(shape, generator=g, dtype=F64)
    noise = torch.randn(shape, generator=g, dtype=F64)
    return z0, zc, noise


def numpy_alphas_cumprod(schedule: str, steps: int) -> np.ndarray:
    """DDPM's linear (Ho et al., scaled by 1000/T) and Nichol & Dhariwal's cosine schedules."""
    if schedule == "linear":
        betas = np.linspace(1e-4 * 1000 / steps, 0.02 * 1000 / steps, steps)
    else:
        f = [math.cos((i / steps + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(steps + 1)]
        betas = np.array([min(1 - f[i + 1] / f[i], 0.999) for i in range(steps)])
    return np.cumprod(1 - np.minimum(betas, 0.999))


def numpy_etas(steps: int, kappa: float, p: float, min_noise: float, eta_max: float) -> np.ndarray:
    """DESIGN §3, written out term by term."""
    s1 = min(min_noise / kappa, min_noise)
    b = math.exp(math.log(eta_max / s1) / (steps - 1))
    sqrt_eta = [s1 * b ** (((t - 1) / (steps - 1)) ** p * (steps - 1)) for t in range(1, steps + 1)]
    return np.array(sqrt_eta) ** 2


class Recorder:
    """Wraps an oracle: records the unscaled z_t and the process time t it was called at."""

    def __init__(
        self, oracle: Callable[[Tensor, Tensor], Tensor], unscale: Callable[[Tensor, Tensor], tuple]
    ):
        self.oracle, self.unscale = oracle, unscale
        self.z_t: list[Tensor] = []
        self.t: list[Tensor] = []

    def __call__(self, x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        z_t, t = self.unscale(x, t_input)
        self.z_t.append(z_t.clone())
        self.t.append(t.clone())
        return self.oracle(z_t, t)


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Trailing spacing (Lin et al. 2024)."""
    return [round(T - i * T / steps) - 1 for i in range(steps)]
