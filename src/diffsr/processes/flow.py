"""Rectified flow with v-prediction (DESIGN §3).

``z_t = (1 - t) z0 + t eps`` for t in (0, 1); the network predicts ``v = eps - z0``; the clean
estimate is ``z0_hat = z_t - t v_hat``. Training times are logit-normal, then shifted by
``t' = s t / (1 + (s - 1) t)``; sampling integrates the ODE with Euler steps from t = 1 (pure
noise) to t = 0 on a uniform grid shifted the same way. The network sees ``t * 1000``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from diffsr.core.errors import ConfigError
from diffsr.core.schema import Strict
from diffsr.processes.base import PROCESSES, Net, Process, SamplerStep, expand
from diffsr.processes.common import check_steps, compute_dtype, randn

#: training t is clamped to [T_EPS, 1 - T_EPS] so that 1 / t and SNR stay finite
T_EPS = 1e-5


def shift_time(t: Tensor, shift: float) -> Tensor:
    """The time shift ``s t / (1 + (s - 1) t)`` (s > 1 spends more time at high noise)."""
    return shift * t / (1 + (shift - 1) * t)


class FlowConfig(Strict):
    """Rectified flow with v-prediction."""

    name: Literal["flow"] = "flow"
    shift: float = Field(1.0, gt=0)
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    min_snr_gamma: float | None = Field(None, gt=0)
    sample_steps: int = Field(8, ge=1)


@PROCESSES.register("flow", config=FlowConfig)
class RectifiedFlow(Process):
    """Rectified flow (v-prediction, Euler sampler).

    shift: time shift s (1 = none). logit_mean, logit_std: the logit-normal training times.
    min_snr_gamma: Min-SNR-gamma in v space, ``min(SNR, g) t^2`` with SNR = ((1 - t) / t)^2;
    None = uniform weights. sample_steps: default Euler steps.
    """

    name = "flow"
    prediction = "v"

    def __init__(
        self,
        shift: float = 1.0,
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        min_snr_gamma: float | None = None,
        sample_steps: int = 8,
    ) -> None:
        if shift <= 0:
            raise ConfigError(f"process.shift must be > 0, got {shift}")
        if logit_std <= 0:
            raise ConfigError(f"process.logit_std must be > 0, got {logit_std}")
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ConfigError(f"process.min_snr_gamma must be > 0 or null, got {min_snr_gamma}")
        self.shift = float(shift)
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)
        self.min_snr_gamma = min_snr_gamma
        self.default_steps = check_steps(sample_steps, 2**31, "flow")

    @property
    def t_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def sample_t(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """t = shift(sigmoid(N(logit_mean, logit_std^2))), clamped to [1e-5, 1 - 1e-5]; float32 (B,)."""
        u = randn((batch,), device=device, dtype=torch.float64, generator=generator)
        t = shift_time(torch.sigmoid(self.logit_mean + self.logit_std * u), self.shift)
        return t.clamp(T_EPS, 1 - T_EPS).to(torch.float32)

    def q_sample(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        tt = expand(t, z0)
        return (1 - tt) * z0 + tt * noise

    def target(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return noise - z0

    def snr(self, t: Tensor) -> Tensor:
        """((1 - t) / t)^2 in float64 (inf at t = 0, 0 at t = 1)."""
        t64 = t.double()
        return ((1 - t64) / t64).pow(2)

    def loss_weight(self, t: Tensor) -> Tensor:
        """min(SNR, g) t^2: the x0-space Min-SNR weight moved to v space (z0_hat - z0 = -t (v_hat - v))."""
        dtype = compute_dtype(t.dtype)
        if self.min_snr_gamma is None:
            return torch.ones(t.shape, device=t.device, dtype=dtype)
        t64 = t.double()
        # snr.clamp(max=g) is finite at t = 0 (snr = inf) and times t^2 = 0 there
        weight = self.snr(t).clamp(max=self.min_snr_gamma) * t64.pow(2)
        return weight.to(dtype)

    def time_input(self, t: Tensor, like: Tensor) -> Tensor:
        """The network's time input ``t * 1000``."""
        return t.to(compute_dtype(like.dtype)) * 1000

    def denoise(self, net: Net, z_t: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        return net(z_t, self.time_input(t, z_t), zc)

    def x0(self, z_t: Tensor, out: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        # z_t = (1 - t) z0 + t eps and v = eps - z0, hence z0 = z_t - t v
        return z_t - expand(t, z_t) * out

    def timesteps(self, steps: int) -> list[float]:
        """The sampling grid: ``steps + 1`` shifted times from 1 down to 0 (float64 values)."""
        grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return shift_time(grid, self.shift).tolist()

    def sample_schedule(self, steps: int | None = None) -> list[float]:
        """The Euler grid without its end: ``steps`` shifted times from 1 down (t = 0 is the end)."""
        steps = check_steps(self.default_steps if steps is None else steps, 2**31, "flow")
        return self.timesteps(steps)[:-1]

    def prior(self, zc: Tensor, noise: Tensor) -> Tensor:
        """z_1 = the noise."""
        return noise

    def posterior_step(self, step: SamplerStep, generator: torch.Generator | None = None) -> Tensor:
        """Euler from t to t_next (0 after the last time). Without a hook ``z += (t_next - t) v_hat``;
        with one, the hooked ``x0_hat`` and ``eps_hat = (z_t - (1 - t) x0_hat) / t`` give
        ``z_next = (1 - t_next) x0_hat + t_next eps_hat`` (identical when the hook is the identity)."""
        t_now = step.t_now
        t_next = 0.0 if step.t_next is None else step.t_next
        if not step.hooked:
            return step.z + (t_next - t_now) * step.out
        eps_hat = (step.z - (1 - t_now) * step.x0_hat) / t_now
        return (1 - t_next) * step.x0_hat + t_next * eps_hat
