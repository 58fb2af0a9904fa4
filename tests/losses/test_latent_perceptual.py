"""LatentPerceptualLoss: distances between a VAE decoder's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.losses.latent_perceptual import LatentPerceptualLoss


class _FakeCodec:
    """decoder_features: two conv feature maps (8 and 16 px) of a latent (B, 2, 8, 8)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1).double()
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1).double()
        self.grad_modes: list[bool] = []

    def decoder_features(self, z: Tensor) -> list[Tensor]:
        self.grad_modes.append(torch.is_grad_enabled())
        f1 = torch.relu(self.conv1(z))
        f2 = self.conv2(nn.functional.interpolate(f1, scale_factor=2))
        return [f1, f2]


def _normalised(f: np.ndarray) -> np.ndarray:
    mean = f.mean(axis=(-2, -1), keepdims=True)
    std = f.std(axis=(-2, -1), keepdims=True)  # population std
    return (f - mean) / (std + 1e-6)


def test_latent_perceptual_by_hand() -> None:
    codec = _FakeCodec()
    loss = LatentPerceptualLoss(codec, layers=3)  # only 2 maps exist: both used
    gen = torch.Generator().manual_seed(4)
    z0 = torch.randn(2, 2, 8, 8, generator=gen, dtype=torch.float64)
    z0_hat = (z0 + 0.3 * torch.randn(2, 2, 8, 8, generator=gen, dtype=torch.float64)).requires_grad_(True)
    value = loss(z0_hat, z0)
    with torch.no_grad():
        f_hat = [f.numpy() for f in codec.decoder_features(z0_hat)]
        f = [f.numpy() for f in codec.decoder_features(z0)]
    expected = sum(
        2.0**-level * ((_normalised(f_hat[level]) - _normalised(f[level])) ** 2).mean(axis=(1, 2, 3))
        for level in range(2)
    )
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-10)
    assert codec.grad_modes[:2] == [True, False]  # z0's features without gradient
    value.sum().backward()
    assert z0_hat.grad is not None and z0_hat.grad.abs().sum() > 0
    # one layer only: the first map's term
    one = LatentPerceptualLoss(codec, layers=1)(z0_hat, z0).detach().numpy()
    np.testing.assert_allclose(one, ((_normalised(f_hat[0]) - _normalised(f[0])) ** 2).mean(axis=(1, 2, 3)),
                               rtol=1e-10)
    assert LatentPerceptualLoss(codec)(z0, z0).abs().max().item() == 0.0
    assert "codec" not in dict(loss.named_children())  # held by reference, not a submodule


def test_latent_perceptual_needs_decoder_features() -> None:
    with pytest.raises(ConfigError, match="latent_perceptual needs the vae codec"):
        LatentPerceptualLoss(object())
