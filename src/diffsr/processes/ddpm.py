"""Variance-preserving DDPM with eps / x0 / v prediction and a deterministic DDIM sampler.

``z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) eps`` for integer t in [0, T - 1] (stored as float),
``ab_t = prod_{s <= t} (1 - beta_s)``. Targets: ``eps``, ``z0`` or
``v = sqrt(ab) eps - sqrt(1 - ab) z0``. The condition enters only through the network.
The network sees ``t * 1000 / T`` (= t for the usual T = 1000).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from diffsr.core.errors import ConfigError
from diffsr.core.schema import Strict
from diffsr.processes.base import PROCESSES, Net, Process, SamplerStep
from diffsr.processes.common import check_steps, compute_dtype, gather, min_snr_weight, randint

#: betas are clipped here (Nichol & Dhariwal) so that no ab_t is exactly 0
MAX_BETA = 0.999
PREDICTIONS = ("eps", "x0", "v")
SCHEDULES = ("linear", "cosine")


def linear_betas(steps: int) -> Tensor:
    """DDPM's 1e-4 -> 0.02 over 1000 steps, scaled by 1000 / T for other T (float64, clipped)."""
    scale = 1000.0 / steps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def cosine_betas(steps: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal: ab(t) = cos^2((t / T + s) / (1 + s) pi / 2), betas clipped at 0.999."""
    i = torch.arange(steps + 1, dtype=torch.float64)
    alpha_bar = torch.cos((i / steps + s) / (1 + s) * math.pi / 2).pow(2)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


class DDPMConfig(Strict):
    """Variance-preserving DDPM with eps / x0 / v prediction and a DDIM sampler."""

    name: Literal["ddpm"] = "ddpm"
    schedule: Literal["linear", "cosine"] = "linear"
    train_steps: int = Field(1000, ge=2)
    prediction: Literal["eps", "x0", "v"] = "eps"
    min_snr_gamma: float | None = Field(5.0, gt=0)
    sample_steps: int = Field(50, ge=1)


@PROCESSES.register("ddpm", config=DDPMConfig)
class DDPM(Process):
    """VP diffusion.

    schedule: "linear" | "cosine". train_steps: T. prediction: "eps" | "x0" | "v".
    min_snr_gamma: Min-SNR-gamma (None = uniform). sample_steps: default DDIM steps.
    """

    name = "ddpm"

    def __init__(
        self,
        schedule: str = "linear",
        train_steps: int = 1000,
        prediction: str = "eps",
        min_snr_gamma: float | None = 5.0,
        sample_steps: int = 50,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ConfigError(f"process.schedule must be one of {SCHEDULES}, got {schedule!r}")
        if prediction not in PREDICTIONS:
            raise ConfigError(f"process.prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if train_steps < 2:
            raise ConfigError(f"process.train_steps must be >= 2, got {train_steps}")
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ConfigError(f"process.min_snr_gamma must be > 0 or null, got {min_snr_gamma}")
        self.schedule = schedule
        self.train_steps = int(train_steps)
        self.prediction = prediction
        self.min_snr_gamma = min_snr_gamma
        self.default_steps = check_steps(sample_steps, self.train_steps, "ddpm")
        betas = linear_betas(self.train_steps) if schedule == "linear" else cosine_betas(self.train_steps)
        #: float64 CPU tables indexed by t
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.sqrt_ab = self.alphas_cumprod.sqrt()
        self.sqrt_1mab = (1 - self.alphas_cumprod).sqrt()
        self.snr_table = self.alphas_cumprod / (1 - self.alphas_cumprod)

    @property
    def t_range(self) -> tuple[float, float]:
        return (0.0, float(self.train_steps - 1))

    def sample_t(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Integers uniform on [0, T - 1], float32 (B,)."""
        return randint(self.train_steps, batch, device=device, generator=generator)

    def q_sample(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return gather(self.sqrt_ab, t, z0) * z0 + gather(self.sqrt_1mab, t, z0) * noise

    def target(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return z0
        return gather(self.sqrt_ab, t, z0) * noise - gather(self.sqrt_1mab, t, z0) * z0

    def snr(self, t: Tensor) -> Tensor:
        """ab / (1 - ab) at integer t, float64 (B,)."""
        return self.snr_table.to(t.device)[t.round().long()]

    def loss_weight(self, t: Tensor) -> Tensor:
        """Min-SNR-gamma for the configured target: min(SNR,g) (x0), /SNR (eps), /(SNR+1) (v)."""
        dtype = compute_dtype(t.dtype)
        if self.min_snr_gamma is None:
            return torch.ones(t.shape, device=t.device, dtype=dtype)
        return min_snr_weight(self.snr(t), self.min_snr_gamma, self.prediction).to(dtype)

    def time_input(self, t: Tensor, like: Tensor) -> Tensor:
        """The network's time input ``t * 1000 / T``."""
        return t.to(compute_dtype(like.dtype)) * (1000.0 / self.train_steps)

    def denoise(self, net: Net, z_t: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        # VP latents already have unit variance: no input scaling
        return net(z_t, self.time_input(t, z_t), zc)

    def x0(self, z_t: Tensor, out: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        if self.prediction == "x0":
            return out
        sqrt_ab, sqrt_1mab = gather(self.sqrt_ab, t, z_t), gather(self.sqrt_1mab, t, z_t)
        if self.prediction == "eps":
            return (z_t - sqrt_1mab * out) / sqrt_ab
        # v = sqrt(ab) eps - sqrt(1-ab) z0 with z_t = sqrt(ab) z0 + sqrt(1-ab) eps gives
        # z0 = sqrt(ab) z_t - sqrt(1-ab) v
        return sqrt_ab * z_t - sqrt_1mab * out

    def eps(self, z_t: Tensor, out: Tensor, t: Tensor) -> Tensor:
        """The noise estimate from the network output."""
        if self.prediction == "eps":
            return out
        sqrt_ab, sqrt_1mab = gather(self.sqrt_ab, t, z_t), gather(self.sqrt_1mab, t, z_t)
        if self.prediction == "x0":
            return (z_t - sqrt_ab * out) / sqrt_1mab
        return sqrt_1mab * z_t + sqrt_ab * out

    def timesteps(self, steps: int) -> list[int]:
        """DDIM's "trailing" spacing (Lin et al. 2024): ``round(T - i T / steps) - 1``, i < steps.

        Starts at T - 1 (pure noise) for every step count; the update after the last one goes to
        ab = 1, i.e. returns z0_hat."""
        steps = check_steps(steps, self.train_steps, "ddpm")
        T = self.train_steps
        return [int(round(T - i * T / steps)) - 1 for i in range(steps)]

    def sample_schedule(self, steps: int | None = None) -> list[float]:
        """DDIM's trailing times (:meth:`timesteps`) as floats."""
        return [float(t) for t in self.timesteps(self.default_steps if steps is None else steps)]

    def prior(self, zc: Tensor, noise: Tensor) -> Tensor:
        """z_{T-1} = the noise."""
        return noise

    def posterior_step(self, step: SamplerStep, generator: torch.Generator | None = None) -> Tensor:
        """DDIM (eta = 0): ``z_prev = sqrt(ab_prev) z0_hat + sqrt(1 - ab_prev) eps_hat`` (ab_prev = 1
        after the last time, i.e. z0_hat). With a hook eps_hat is recomputed from the hooked
        estimate, ``eps_hat = (z_t - sqrt(ab) z0_hat) / sqrt(1 - ab)``."""
        ab = self.alphas_cumprod
        t_now = int(step.t_now)
        if step.hooked:
            eps_hat = (step.z - math.sqrt(float(ab[t_now])) * step.x0_hat) / math.sqrt(1 - float(ab[t_now]))
        else:
            eps_hat = self.eps(step.z, step.out, step.t)
        ab_prev = float(ab[int(step.t_next)]) if step.t_next is not None else 1.0
        return math.sqrt(ab_prev) * step.x0_hat + math.sqrt(1 - ab_prev) * eps_hat
