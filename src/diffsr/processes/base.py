"""The process interface: how z0 is noised, what the network predicts, and how to sample.

Every process works in its own time units (``t_range``): rectified flow t in [0, 1], DDPM and
ResShift integer steps in [0, T-1] stored as float tensors. Gates are written in those units.

The network is called as ``net(x, t_input, cond)`` where ``x`` is the (possibly scaled) noisy
latent, ``t_input`` a float tensor (B,) on roughly [0, 1000] and ``cond`` the encoded
condition ``zc``; :meth:`Process.denoise` does that mapping so callers never need to know it.
Every process exposes :meth:`Process.x0` so every loss works with every process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from diffsr.core.registry import Registry

#: processes by name; capability ``feed_forward``: no noise, one pass (trains the EDSR-style baselines)
PROCESSES: Registry[Process] = Registry("process", capabilities={"feed_forward": False})

#: a denoiser: (x, t_input (B,), cond) -> out
Net = Callable[[Tensor, Tensor, Tensor], Tensor]
#: an optional hook applied to each x0 estimate during sampling (data consistency)
X0Hook = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SamplerStep:
    """One sampler step, as a process's :meth:`Process.posterior_step` sees it.

    z: the current latent z_t. t: the time as a (B,) tensor; t_now the same as a float.
    t_next: the next time of the schedule, None on the last step. out: the network output.
    x0_hat: the clean estimate (after the sampler's x0 hook, if any). zc: the condition
    latent. hooked: True when a hook replaced x0_hat (the step must then derive its noise
    estimate from x0_hat, not from ``out``).
    """

    z: Tensor
    t: Tensor
    t_now: float
    t_next: float | None
    out: Tensor
    x0_hat: Tensor
    zc: Tensor
    hooked: bool


def expand(t: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) broadcastable against ``like``, in ``like``'s dtype."""
    return t.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class Process:
    """Base class for diffusion / flow processes (stateless, no parameters)."""

    name: str = "process"
    #: what the network predicts: "v", "eps", "x0"
    prediction: str = "x0"

    @property
    def t_range(self) -> tuple[float, float]:
        """(lowest, highest) training t in this process's units."""
        raise NotImplementedError

    def sample_t(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Training timesteps (B,) float."""
        raise NotImplementedError

    def q_sample(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The noisy latent z_t."""
        raise NotImplementedError

    def target(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the network is trained to output."""
        raise NotImplementedError

    def loss_weight(self, t: Tensor) -> Tensor:
        """Per-sample weight (B,) of the diffusion term (Min-SNR when enabled, else 1)."""
        raise NotImplementedError

    def denoise(self, net: Net, z_t: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        """Run the network with this process's input scaling and time conditioning."""
        raise NotImplementedError

    def x0(self, z_t: Tensor, out: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        """The clean estimate z0_hat from the network output (differentiable; never clamped)."""
        raise NotImplementedError

    def loss(self, out: Tensor, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Per-sample diffusion loss (B,): weighted mean squared error against the target."""
        err = (out.float() - self.target(z0, zc, t, noise).float()).pow(2)
        return err.flatten(1).mean(1) * self.loss_weight(t)

    # ------------------------------------------------------------------ sampling
    def sample_schedule(self, steps: int | None = None) -> list[float]:
        """The times the sampler evaluates the denoiser at, noisiest first (None: the default steps)."""
        raise NotImplementedError

    def prior(self, zc: Tensor, noise: Tensor) -> Tensor:
        """The sampler's starting point z_T for the condition ``zc`` and standard-normal ``noise``."""
        raise NotImplementedError

    def posterior_step(self, step: SamplerStep, generator: torch.Generator | None = None) -> Tensor:
        """The next latent given the step's clean estimate (the sample itself after the last step)."""
        raise NotImplementedError

    def one_step_start(self, zc: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(z_start, t_start (B,)): where a one-step sample starts; a one-step student trains on it."""
        z = self.prior(zc, noise.to(device=zc.device, dtype=zc.dtype))
        t0 = self.sample_schedule(1)[0]
        return z, torch.full((zc.shape[0],), t0, device=zc.device, dtype=torch.promote_types(zc.dtype, torch.float32))

    def sample(
        self,
        net: Net,
        zc: Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        x0_hook: X0Hook | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Draw z0 given the condition ``zc``: :func:`diffsr.sampling.samplers.sample` with this process."""
        from diffsr.sampling.samplers import sample

        return sample(net, self, zc, steps, generator=generator, x0_hook=x0_hook, noise=noise)
