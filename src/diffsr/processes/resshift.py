"""ResShift: residual shifting between the condition and the target (Yue et al., NeurIPS 2023).

With ``y = zc`` (the encoded LR condition) and integer t in [0, T - 1] indexing
``eta_1 .. eta_T`` (t = 0 is eta_1):

    z_t = z0 + eta_t (y - z0) + kappa sqrt(eta_t) eps,        prior z_T ~ N(y, kappa^2 eta_T)

The network predicts z0 (as ``zc + out`` when ``residual``), sees ``z_t / sqrt(kappa^2 eta_t + 1)``
and the time input ``t * 1000 / T``. Sampling is ancestral with the exact Gaussian posterior

    mean = (eta_prev / eta_t) z_t + (alpha_t / eta_t) z0_hat,   var = kappa^2 (eta_prev / eta_t) alpha_t,

``alpha_t = eta_t - eta_prev``; the last step returns z0_hat.
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
from diffsr.processes.common import check_steps, compute_dtype, gather, randint, randn


def eta_schedule(steps: int, kappa: float, p: float, min_noise: float, eta_max: float) -> Tensor:
    """ResShift's eta_1..eta_T (float64 (T,)), DESIGN §3.

    ``sqrt(eta_1) = min(min_noise / kappa, min_noise)``, ``sqrt(eta_T) = eta_max``,
    ``sqrt(eta_t) = sqrt(eta_1) b^{beta_t}``, ``b = (sqrt(eta_T) / sqrt(eta_1))^{1 / (T - 1)}``,
    ``beta_t = ((t - 1) / (T - 1))^p (T - 1)``.
    """
    sqrt_eta_1 = min(min_noise / kappa, min_noise)
    if not 0 < sqrt_eta_1 < eta_max:
        raise ConfigError(
            f"process: sqrt(eta_1) = min(min_noise / kappa, min_noise) = {sqrt_eta_1:g} must be below "
            f"eta_max = {eta_max:g}"
        )
    log_b = math.log(eta_max / sqrt_eta_1) / (steps - 1)
    beta = torch.linspace(0, 1, steps, dtype=torch.float64).pow(p) * (steps - 1)
    sqrt_eta = sqrt_eta_1 * torch.exp(beta * log_b)
    return sqrt_eta.pow(2)


class ResShiftConfig(Strict):
    """ResShift residual shifting (Yue et al. 2023) with x0 prediction."""

    name: Literal["resshift"] = "resshift"
    steps: int = Field(15, ge=2)
    kappa: float = Field(2.0, gt=0)
    p: float = Field(0.3, gt=0)
    min_noise: float = Field(0.04, gt=0)
    eta_max: float = Field(0.99, gt=0, lt=1)
    residual: bool = True  # x0_hat = condition + net output
    min_snr_gamma: float | None = Field(None, gt=0)


@PROCESSES.register("resshift", config=ResShiftConfig)
class ResShift(Process):
    """ResShift with x0 prediction.

    steps: T. kappa: noise scale. p: schedule power. min_noise, eta_max: sqrt(eta_1), sqrt(eta_T)
    as in :func:`eta_schedule`. residual: z0_hat = zc + out (else out). min_snr_gamma: weight
    min(SNR_t, g) with SNR_t = (1 - eta_t)^2 / (kappa^2 eta_t) (docs/processes.md); None = 1.
    """

    name = "resshift"
    prediction = "x0"

    def __init__(
        self,
        steps: int = 15,
        kappa: float = 2.0,
        p: float = 0.3,
        min_noise: float = 0.04,
        eta_max: float = 0.99,
        residual: bool = True,
        min_snr_gamma: float | None = None,
    ) -> None:
        if steps < 2:
            raise ConfigError(f"process.steps must be >= 2, got {steps}")
        if kappa <= 0 or p <= 0 or min_noise <= 0:
            raise ConfigError(f"process: kappa, p and min_noise must be > 0, got {kappa}, {p}, {min_noise}")
        if not 0 < eta_max < 1:
            raise ConfigError(f"process.eta_max must be in (0, 1), got {eta_max}")
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ConfigError(f"process.min_snr_gamma must be > 0 or null, got {min_snr_gamma}")
        self.steps = int(steps)
        self.kappa = float(kappa)
        self.p = float(p)
        self.min_noise = float(min_noise)
        self.eta_max = float(eta_max)
        self.residual = bool(residual)
        self.min_snr_gamma = min_snr_gamma
        self.default_steps = self.steps
        #: float64 CPU tables indexed by t (t = 0 is eta_1)
        self.etas = eta_schedule(self.steps, self.kappa, self.p, self.min_noise, self.eta_max)
        self.sqrt_etas = self.etas.sqrt()
        self.input_scale = 1 / (self.kappa**2 * self.etas + 1).sqrt()
        self.snr_table = (1 - self.etas).pow(2) / (self.kappa**2 * self.etas)

    @property
    def t_range(self) -> tuple[float, float]:
        return (0.0, float(self.steps - 1))

    def sample_t(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Integers uniform on [0, T - 1], float32 (B,)."""
        return randint(self.steps, batch, device=device, generator=generator)

    def q_sample(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        eta = gather(self.etas, t, z0)
        return z0 + eta * (zc - z0) + self.kappa * gather(self.sqrt_etas, t, z0) * noise

    def target(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        # with a residual head the raw output is trained towards z0 - zc, i.e. z0_hat towards z0
        return z0 - zc if self.residual else z0

    def snr(self, t: Tensor) -> Tensor:
        """(1 - eta_t)^2 / (kappa^2 eta_t), float64 (B,): the signal z0 - y in z_t - y over the noise."""
        return self.snr_table.to(t.device)[t.round().long()]

    def loss_weight(self, t: Tensor) -> Tensor:
        """min(SNR_t, g) (x0 prediction), or 1 when min_snr_gamma is None."""
        dtype = compute_dtype(t.dtype)
        if self.min_snr_gamma is None:
            return torch.ones(t.shape, device=t.device, dtype=dtype)
        return self.snr(t).clamp(max=self.min_snr_gamma).to(dtype)

    def time_input(self, t: Tensor, like: Tensor) -> Tensor:
        """The network's time input ``t * 1000 / T`` (the paper feeds the raw index 0..T-1)."""
        return t.to(compute_dtype(like.dtype)) * (1000.0 / self.steps)

    def scale_input(self, z_t: Tensor, t: Tensor) -> Tensor:
        """``z_t / sqrt(kappa^2 eta_t + 1)``: roughly unit variance for unit-variance latents."""
        return z_t * gather(self.input_scale, t, z_t)

    def denoise(self, net: Net, z_t: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        return net(self.scale_input(z_t, t), self.time_input(t, z_t), zc)

    def x0(self, z_t: Tensor, out: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        return zc + out if self.residual else out

    def prior(self, zc: Tensor, noise: Tensor) -> Tensor:
        """z_T = y + kappa sqrt(eta_T) noise."""
        return zc + self.kappa * math.sqrt(float(self.etas[-1])) * noise

    def timesteps(self, steps: int) -> list[int]:
        """Kept indices, descending: ``round(linspace(T - 1, 0, steps))`` (all T for steps = T; a
        single step keeps only T - 1). Distinct for steps <= T."""
        steps = check_steps(steps, self.steps, "resshift")
        if steps == 1:
            return [self.steps - 1]
        grid = torch.linspace(self.steps - 1, 0, steps, dtype=torch.float64)
        return [int(round(v)) for v in grid.tolist()]

    def posterior(self, z_t: Tensor, x0_hat: Tensor, eta_t: float, eta_prev: float) -> tuple[Tensor, float]:
        """Mean and variance of q(z_prev | z_t, x0_hat) between two (possibly respaced) etas;
        ``eta_prev = 0`` gives (x0_hat, 0)."""
        alpha = eta_t - eta_prev
        mean = (eta_prev / eta_t) * z_t + (alpha / eta_t) * x0_hat
        return mean, self.kappa**2 * (eta_prev / eta_t) * alpha

    def sample_schedule(self, steps: int | None = None) -> list[float]:
        """The kept indices (:meth:`timesteps`) as floats."""
        return [float(t) for t in self.timesteps(self.default_steps if steps is None else steps)]

    def posterior_step(self, step: SamplerStep, generator: torch.Generator | None = None) -> Tensor:
        """A draw from the Gaussian posterior between two (possibly respaced) etas, with fresh
        noise from ``generator``; after the last time the clean estimate itself (no noise)."""
        if step.t_next is None:
            return step.x0_hat
        etas = self.etas
        mean, var = self.posterior(step.z, step.x0_hat, float(etas[int(step.t_now)]), float(etas[int(step.t_next)]))
        z = step.z
        return mean + math.sqrt(var) * randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
