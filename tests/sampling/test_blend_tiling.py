"""Blend-mode tiled inference agrees with whole-image inference (baselines and diffusion models)."""

from __future__ import annotations

import torch

from diffsr.sampling.infer import super_resolve
from tests.sampling._helpers import _loaded, _lr


def test_tiled_baseline_matches_whole_image() -> None:
    loaded = _loaded("edsr", ["net.size=tiny"])
    lr = _lr(40, 56)
    whole = super_resolve(loaded, lr, tile=0)
    tiled = super_resolve(loaded, lr, tile=96, overlap=40)
    assert tiled.shape == whole.shape == (1, 1, 160, 224)
    err = (tiled - whole).abs().max().item()
    print("baseline max |tiled - whole|", err)
    assert err < 1e-2  # measured 4.5e-3: tiny EDSR context beyond the 10-px LR overlap margin


class _Pointwise(torch.nn.Module):
    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return 0.5 * z


def test_tiled_diffusion_uses_one_noise_field() -> None:
    loaded = _loaded("demo")  # ResShift, 1 step: no per-step noise; wavelet codec (latent /4)
    # A pointwise denoiser (net(z, t, cond) = 0.5 z) makes the sample a pointwise function of the
    # LR and the starting noise, so tiled == untiled exactly iff every tile samples from its own
    # slice of the one noise field (measured max 1.2e-7; per-tile reseeding repeats the noise).
    # A real UNet adds the tiles' limited context and per-tile GroupNorm statistics: for this tiny
    # randomly initialised UNet (zero-init layers given N(0, 0.02) weights) the measured mean
    # |tiled - untiled| is 0.067, which says nothing about a trained model, so it is not asserted.
    loaded.model.net = _Pointwise()
    lr = _lr(24, 32)
    whole = super_resolve(loaded, lr, tile=0, seed=3)
    tiled = super_resolve(loaded, lr, tile=64, overlap=24, seed=3)
    assert tiled.shape == whole.shape == (1, 1, 96, 128)
    err = (tiled - whole).abs()
    print("diffusion |tiled - whole| max", err.max().item(), "mean", err.mean().item())
    assert err.max().item() < 1e-5
