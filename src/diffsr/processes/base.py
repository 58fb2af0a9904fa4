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

import torch
from torch import Tensor

#: a denoiser: (x, t_input (B,), cond) -> out
Net = Callable[[Tensor, Tensor, Tensor], Tensor]
#: an optional hook applied to each x0 estimate during sampling (data consistency)
X0Hook = Callable[[Tensor, Tensor], Tensor]


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

    def sample(
        self,
        net: Net,
        zc: Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        x0_hook: X0Hook | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Draw z0 given the condition ``zc``; ``x0_hook(z0_hat, t)`` may project each estimate."""
        raise NotImplementedError
