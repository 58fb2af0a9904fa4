"""Shared by the loss tests: stand-in terms, a counting decode, hand references and small batches."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

DT = torch.float64


class Recorder(nn.Module):
    """A pixel/latent term that records what it got and returns per-sample mean |pred - target|^p."""

    def __init__(self, p: int = 1, scale: float = 1.0) -> None:
        super().__init__()
        self.p, self.scale = p, scale
        self.calls: list[dict[str, Tensor | None]] = []

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        self.calls.append({"pred": pred.detach().clone(), "target": target.clone(),
                           "mask": None if mask is None else mask.clone()})
        return self.scale * (pred - target).abs().pow(self.p).flatten(1).mean(1)


class CountingDecode:
    """decode(z, index) = (z + 1) / 2 that counts calls and records the rows asked for."""

    def __init__(self) -> None:
        self.calls = 0
        self.indices: list[list[int]] = []

    def __call__(self, z: Tensor, index: Tensor) -> Tensor:
        self.calls += 1
        self.indices.append(index.tolist())
        assert index.dtype == torch.long and z.shape[0] == index.numel()
        return (z + 1) / 2


def batch(b: int = 4, size: int = 8, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(b, 1, size, size, generator=g, dtype=DT)
    z0 = hr * 2 - 1
    z0_hat = (z0 + 0.3 * torch.randn(b, 1, size, size, generator=g, dtype=DT)).requires_grad_(True)
    return {"hr": hr, "z0": z0, "z0_hat": z0_hat}


def l1_rows(x0_hat: Tensor, hr: Tensor) -> np.ndarray:
    """Per-sample mean |x0_hat - hr| in numpy (the hand reference)."""
    return np.abs(x0_hat.detach().numpy() - hr.numpy()).reshape(x0_hat.shape[0], -1).mean(1)


class FakeGAN(nn.Module):
    """A GAN-shaped term: set_step, discriminator_step and its own state."""

    def __init__(self) -> None:
        super().__init__()
        self.disc = nn.Conv2d(1, 1, 3, padding=1).to(DT)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=1e-3)
        self.steps: list[int] = []
        self.d_calls: list[tuple[Tensor, Tensor, int]] = []

    def set_step(self, step: int) -> None:
        self.steps.append(step)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return -self.disc(pred).flatten(1).mean(1)

    def discriminator_step(self, real: Tensor, fake: Tensor, step: int) -> dict[str, float]:
        self.d_calls.append((real, fake, step))
        return {"d_loss": 0.5}


B, S = 4, 32


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "z0_hat": torch.rand(B, 1, S, S, generator=g).requires_grad_(True),
        "hr": torch.rand(B, 1, S, S, generator=g),
        "t": torch.full((B,), 0.5),
    }


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
