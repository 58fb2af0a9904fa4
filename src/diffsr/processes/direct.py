"""Direct regression: no noise, the network maps the condition to x0 in one pass.

Used to train feed-forward SR baselines (EDSR, RCAN, SwinIR) with the same data, loss stack,
trainer and step budget as the diffusion models, so comparisons are like for like.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffsr.core.schema import Strict
from diffsr.processes.base import PROCESSES, Net, Process, SamplerStep


class DirectConfig(Strict):
    """No diffusion: one-pass regression (for the EDSR / RCAN / SwinIR baselines)."""

    name: Literal["direct"] = "direct"
    loss: Literal["l1", "l2"] = "l1"


@PROCESSES.register("direct", config=DirectConfig, feed_forward=True)
class Direct(Process):
    """x0_hat = net(cond); the "diffusion" term is the L1 or L2 error to z0."""

    name = "direct"
    prediction = "x0"
    default_steps = 1

    def __init__(self, loss: str = "l1") -> None:
        if loss not in ("l1", "l2"):
            raise ValueError(f"direct process loss must be 'l1' or 'l2', got {loss!r}")
        self.loss_kind = loss

    @property
    def t_range(self) -> tuple[float, float]:
        return (0.0, 0.0)

    def sample_t(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.zeros(batch, device=device)

    def q_sample(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return zc

    def target(self, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return z0

    def loss_weight(self, t: Tensor) -> Tensor:
        return torch.ones_like(t, dtype=torch.float32)

    def denoise(self, net: Net, z_t: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        return net(z_t, t, zc)

    def x0(self, z_t: Tensor, out: Tensor, t: Tensor, zc: Tensor) -> Tensor:
        return out

    def loss(self, out: Tensor, z0: Tensor, zc: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        err = out.float() - z0.float()
        err = err.abs() if self.loss_kind == "l1" else err.pow(2)
        return err.flatten(1).mean(1)

    def sample_schedule(self, steps: int | None = None) -> list[float]:
        """One pass at t = 0, whatever ``steps`` says."""
        return [0.0]

    def prior(self, zc: Tensor, noise: Tensor) -> Tensor:
        """The network reads the condition itself."""
        return zc

    def posterior_step(self, step: SamplerStep, generator: torch.Generator | None = None) -> Tensor:
        """The (hooked) estimate: there is only one step."""
        return step.x0_hat
