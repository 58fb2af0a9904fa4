"""Residual denoising diffusion (RDDM, Liu et al., CVPR 2024): residual and noise on separate schedules.

With ``y = zc`` and the residual ``res = y - z0`` (RDDM's I_res = I_in - I_0), for integer t in
[0, T - 1] (t = 0 is step 1):

    z_t = z0 + abar_t res + bbar_t eps,          z_T = y + bbar_T eps  (abar_T = 1)

``abar_t = sum_{i <= t} alpha_i`` with alpha_i proportional to T + 1 - i (decreasing, sum 1);
``bbar_t^2 = sum_{i <= t} beta2_i`` with beta2_i proportional to i (increasing, sum
``noise_scale``). The network predicts ``res`` and ``eps`` as two channel halves
(``prediction="res_noise"``, so the net needs 2x the latent channels, see
``output_multiplier``) or ``res`` alone (``"res"``, eps then follows from z_t). Sampling is RDDM's
deterministic (sigma = 0) update ``z_prev = z0_hat + abar_prev res_hat + bbar_prev eps_hat``;
the last step returns z0_hat. The network sees ``t * 1000 / T``, no input scaling.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from diffsr.core.errors import ConfigError
from diffsr.core.schema import Strict
from diffsr.processes.base import PROCESSES, Net, Process, SamplerStep
from diffsr.processes.common import check_steps, compute_dtype, gather, randint

PREDICTIONS = ("res_noise", "res")


def rddm_schedules(steps: int, noise_scale: float) -> tuple[Tensor, Tensor]:
    """(abar, bbar) float64 (T,): abar increasing to 1, bbar increasing to sqrt(noise_scale), both > 0."""
    i = torch.arange(1, steps + 1, dtype=torch.float64)
    alphas = steps + 1 - i
    beta2 = i
    abar = torch.cumsum(alphas, 0) / alphas.sum()
    bbar2 = torch.cumsum(beta2, 0) / beta2.sum() * noise_scale
    return abar, bbar2.sqrt()


class RDDMConfig(Strict):
    """Residual denoising diffusion (Liu et al. 2024): residual and noise on separate schedules."""

    name: Literal["rddm"] = "rddm"
    steps: int = Field(10, ge=2)
    noise_scale: float = Field(0.01, gt=0)
    prediction: Literal["res", "res_noise"] = "res"
    sample_steps: int | None = Field(None, ge=1)
    res_weight: float = Field(1.0, ge=0)  # weight of the residual loss L_res
    noise_weight: float | None = Field(None, ge=0)  # of the noise loss L_eps; None: 1 for res_noise, 0 for res


@PROCESSES.register("rddm", config=RDDMConfig)
class RDDM(Process):
    """Residual denoising diffusion.

    steps: T. noise_scale: bbar_T^2 (RDDM uses 0.01 for conditioned restoration, 1 for
    generation). prediction: "res" (the default: C output channels like every other process) or
    "res_noise" (the net outputs 2C channels, residual then noise; see ``output_multiplier``).
    sample_steps: default sampling steps (None = T).
    res_weight, noise_weight: the two separate losses, ``res_weight * MSE(res_hat, res) +
    noise_weight * MSE(eps_hat, eps)`` (RDDM's L_res and L_eps). With ``prediction="res"`` the
    noise estimate is derived from the residual, so its loss is the residual error weighted by
    ((1 - abar_t) / bbar_t)^2 per t; its default weight is 0 there (RDDM's "SM-Res") and 1 with
    ``"res_noise"`` ("SM-Res-N"). ``loss_terms`` returns both per-sample terms.
    """

    name = "rddm"
    prediction = "x0"

    def __init__(
        self,
        steps: int = 10,
        noise_scale: float = 0.01,
        prediction: str = "res",
        sample_steps: int | None = None,
        res_weight: float = 1.0,
        noise_weight: float | None = None,
    ) -> None:
        if steps < 2:
            raise ConfigError(f"process.steps must be >= 2, got {steps}")
        if noise_scale <= 0:
            raise ConfigError(f"process.noise_scale must be > 0, got {noise_scale}")
        if prediction not in PREDICTIONS:
            raise ConfigError(f"process.prediction must be one of {PREDICTIONS}, got {prediction!r}")
        noise_weight = (1.0 if prediction == "res_noise" else 0.0) if noise_weight is None else noise_weight
        if res_weight < 0 or noise_weight < 0 or res_weight + noise_weight == 0:
            raise ConfigError(
                f"process.res_weight / noise_weight must be >= 0 and not both 0, got {res_weight}, {noise_weight}"
            )
        self.res_weight, self.noise_weight = float(res_weight), float(noise_weight)
        self.steps = int(steps)
        self.noise_scale = float(noise_scale)
        self.prediction = prediction
        #: network output channels = output_multiplier x latent channels
        self.output_multiplier = 2 if prediction == "res_noise" else 1
        steps_default = self.steps if sample_steps is None else sample_steps
        self.default_steps = check_steps(steps_default, self.steps, "rddm")
        #: float64 CPU tables indexed by t (t = 0 is step 1)
        self.abar, self.bbar = rddm_schedules(self.steps, self.noise_scale)

    @property
    def t_range(self) -> tuple[float, float]:
        return (0.0, float(self.steps - 1))

    def sample_t(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Integers uniform on [0, T - 1], float32 (B,)."""
        return randint(self.steps, batch, device=device, generator=generator)

    def q_sample(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return z0 + gather(self.abar, t, z0) * (zc - z0) + gather(self.bbar, t, z0) * noise

    def target(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        res = zc - z0
        return torch.cat([res, noise], dim=1) if self.prediction == "res_noise" else res

    def loss_weight(self, t: Tensor) -> Tensor:
        """Uniform (RDDM weights the residual and noise terms equally)."""
        return torch.ones(t.shape, device=t.device, dtype=compute_dtype(t.dtype))

    def loss_terms(
        self, out: Tensor, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor, *, noise_term: bool = True
    ) -> dict[str, Tensor]:
        """The per-sample losses (B,) before weighting: ``res`` and (with ``noise_term``) ``noise``
        mean squared errors. The noise estimate needs z_t, so it is only built when asked for."""
        res_hat = out.chunk(2, dim=1)[0] if self.prediction == "res_noise" else out
        terms = {"res": (res_hat.float() - (zc - z0).float()).pow(2).flatten(1).mean(1)}
        if noise_term:
            _, eps_hat = self.split(self.q_sample(z0, zc, t, noise), out, t, zc)
            terms["noise"] = (eps_hat.float() - noise.float()).pow(2).flatten(1).mean(1)
        return terms

    def loss(self, out: Tensor, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``res_weight * L_res + noise_weight * L_eps`` per sample (B,)."""
        terms = self.loss_terms(out, z0, zc, t, noise, noise_term=self.noise_weight > 0)
        total = self.res_weight * terms["res"]
        if "noise" in terms:
            total = total + self.noise_weight * terms["noise"]
        return total * self.loss_weight(t)

    def time_input(self, t: Tensor, like: Tensor) -> Tensor:
        """The network's time input ``t * 1000 / T``."""
        return t.to(compute_dtype(like.dtype)) * (1000.0 / self.steps)

    def denoise(self, net: Net, z_t: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        return net(z_t, self.time_input(t, z_t), zc)

    def split(self, z_t: Tensor, out: Tensor, t: Tensor, zc: Tensor) -> tuple[Tensor, Tensor]:
        """(res_hat, eps_hat) from the network output."""
        abar, bbar = gather(self.abar, t, z_t), gather(self.bbar, t, z_t)
        if self.prediction == "res_noise":
            res_hat, eps_hat = out.chunk(2, dim=1)
            return res_hat, eps_hat
        # z_t = zc - res + abar res + bbar eps  =>  eps = (z_t - zc + (1 - abar) res) / bbar
        return out, (z_t - zc + (1 - abar) * out) / bbar

    def x0(self, z_t: Tensor, out: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        if self.prediction == "res":
            return zc - out
        res_hat, eps_hat = out.chunk(2, dim=1)
        # RDDM's x0 from both halves: z0 = z_t - abar res - bbar eps
        return z_t - gather(self.abar, t, z_t) * res_hat - gather(self.bbar, t, z_t) * eps_hat

    def timesteps(self, steps: int) -> list[int]:
        """Kept indices, descending: ``round(linspace(T - 1, 0, steps))`` (a single step keeps T - 1)."""
        steps = check_steps(steps, self.steps, "rddm")
        if steps == 1:
            return [self.steps - 1]
        grid = torch.linspace(self.steps - 1, 0, steps, dtype=torch.float64)
        return [int(round(v)) for v in grid.tolist()]

    def sample_schedule(self, steps: int | None = None) -> list[float]:
        """The kept indices (:meth:`timesteps`) as floats."""
        return [float(t) for t in self.timesteps(self.default_steps if steps is None else steps)]

    def prior(self, zc: Tensor, noise: Tensor) -> Tensor:
        """z_T = zc + bbar_T noise."""
        return zc + float(self.bbar[-1]) * noise

    def posterior_step(self, step: SamplerStep, generator: torch.Generator | None = None) -> Tensor:
        """RDDM's deterministic update ``z_prev = z0_hat + abar_prev res_hat + bbar_prev eps_hat``; after the
        last time z0_hat. A hook replaces z0_hat; the residual and noise are then recomputed from it
        (``res = zc - z0_hat``, ``eps = (z_t - z0_hat - abar res) / bbar``)."""
        if step.t_next is None:
            return step.x0_hat
        x0_hat, z, zc = step.x0_hat, step.z, step.zc
        if step.hooked:
            res_hat = zc - x0_hat
            eps_hat = (z - x0_hat - float(self.abar[int(step.t_now)]) * res_hat) / float(self.bbar[int(step.t_now)])
        else:
            res_hat, eps_hat = self.split(z, step.out, step.t, zc)
        t_prev = int(step.t_next)
        return x0_hat + float(self.abar[t_prev]) * res_hat + float(self.bbar[t_prev]) * eps_hat
