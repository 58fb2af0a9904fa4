"""Samplers: plain functions over a denoiser and a process's schedule and posterior.

In the style of k-diffusion's ``sample_euler(model, x, sigmas)``: the loop below knows nothing
about any particular process. A :class:`~diffsr.processes.base.Process` supplies

- ``sample_schedule(steps)``: the times the denoiser is evaluated at, noisiest first;
- ``prior(zc, noise)``: the starting point z_T (rectified flow and DDPM: the noise; ResShift:
  ``zc + kappa sqrt(eta_T) noise``; RDDM: ``zc + bbar_T noise``; direct: ``zc``);
- ``denoise`` and ``x0``: the network's output and the clean estimate x0_hat;
- ``posterior_step(step, generator)``: the next z given x0_hat (Euler, DDIM, ResShift's
  Gaussian posterior, RDDM's update); after the last time it returns the result.

``x0_hook(x0_hat, t)`` may replace each clean estimate (data consistency) before the
posterior step; processes then derive the step from the hooked estimate.

This module depends on the process interface only (it sits with the processes in the import
order, below the model), so every process samples through the same code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffsr.processes.base import Net, Process, SamplerStep, X0Hook
from diffsr.processes.common import compute_dtype, start_noise

__all__ = ["Denoiser", "sample"]


class Denoiser:
    """Any net + any process -> (out, x0_hat) at (z_t, t), for the condition ``zc``."""

    def __init__(self, net: Net, process: Process, zc: Tensor) -> None:
        self.net, self.process, self.zc = net, process, zc

    def __call__(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        out = self.process.denoise(self.net, z, t, self.zc)
        return out, self.process.x0(z, out, t, self.zc)


@torch.no_grad()
def sample(
    net: Net,
    process: Process,
    zc: Tensor,
    steps: int | None = None,
    *,
    generator: torch.Generator | None = None,
    x0_hook: X0Hook | None = None,
    noise: Tensor | None = None,
    start: tuple[Tensor, int] | None = None,
    on_step: Callable[[SamplerStep], None] | None = None,
) -> Tensor:
    """Draw z0 given the condition latent ``zc`` (B, C', h, w).

    steps: sampling steps (None: the process's default). noise: the starting noise (default
    randn like ``zc`` from ``generator``); fresh noise of stochastic steps also comes from
    ``generator``. start: ``(z, k)`` starts the chain at the k-th time of the schedule from
    ``z`` instead of the prior (SDEdit-style partial chains). on_step: called with every
    :class:`~diffsr.processes.base.SamplerStep` (for inspection).
    """
    times = process.sample_schedule(steps)
    if start is None:
        z, first = process.prior(zc, start_noise(zc, noise, generator)), 0
    else:
        z, first = start
        if not 0 <= first < len(times):
            raise ValueError(f"sample: start index {first} outside the {len(times)}-step schedule")
        z = z.to(device=zc.device, dtype=zc.dtype)
    denoiser = Denoiser(net, process, zc)
    for i in range(first, len(times)):
        t_now = times[i]
        t = torch.full((z.shape[0],), t_now, device=z.device, dtype=compute_dtype(z.dtype))
        out, x0_hat = denoiser(z, t)
        if x0_hook is not None:
            x0_hat = x0_hook(x0_hat, t)
        step = SamplerStep(z=z, t=t, t_now=t_now, t_next=times[i + 1] if i + 1 < len(times) else None,
                           out=out, x0_hat=x0_hat, zc=zc, hooked=x0_hook is not None)
        if on_step is not None:
            on_step(step)
        z = process.posterior_step(step, generator)
    return z
