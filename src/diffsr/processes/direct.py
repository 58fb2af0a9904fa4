"""Direct regression: no noise, the network maps the condition to x0 in one pass.

Used to train feed-forward SR baselines (EDSR, RCAN, SwinIR) with the same data, loss stack,
trainer and step budget as the diffusion models, so comparisons are like for like.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffsr.processes.base import Net, Process, X0Hook


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

    def sample(
        self,
        net: Net,
        zc: Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        x0_hook: X0Hook | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        t = torch.zeros(zc.shape[0], device=zc.device)
        z0 = net(zc, t, zc)
        return x0_hook(z0, t) if x0_hook is not None else z0
