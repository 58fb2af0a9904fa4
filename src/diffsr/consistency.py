"""Data consistency at sampling: keep every clean estimate consistent with the LR measurement.

After each x0 estimate the sampler calls a hook that decodes it, projects the image onto the
set of images consistent with the LR input for the known degradation, and re-encodes it:

- ``backprojection`` (bicubic / blur degradations): iterative back-projection (Irani & Peleg
  1991), ``x <- x + up(lr - down(x))`` repeated ``consistency_iters`` times;
- ``kspace`` (MRI k-space truncation): the measured low frequencies replace the estimate's
  (exact: the output's kept frequencies equal the measurement's);
- ``guidance > 0`` adds a DPS-style gradient step ``x <- x - g * d/dx ||down(x) - lr||^2``.

For codecs whose decode is linear and lossless (pixel, wavelet) decode-project-encode is the
projection in latent space; for a VAE it is the decode/encode round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffsr.codecs.base import Latent


def back_project(x: Tensor, lr: Tensor, scale: int, iters: int = 3) -> Tensor:
    """Iterative back-projection: make ``bicubic_down(x)`` match ``lr``."""
    from diffsr.data.degrade import bicubic_down, upsample

    for _ in range(iters):
        # no clamping inside: the correction may be negative
        x = x + upsample(lr - bicubic_down(x, scale, clamp=False), scale, clamp=False)
    return x


def kspace_project(x: Tensor, lr: Tensor, scale: int) -> Tensor:
    """Replace the centre 1/scale of x's centred 2-D spectrum by the measurement's.

    ``lr`` is the k-space-truncated LR image (its spectrum is the HR spectrum's centre, see
    ``diffsr.data.degrade.kspace_truncate``); the result's kept frequencies equal it exactly.
    """
    from diffsr.data.degrade import kspace_upsample

    measured = torch.fft.fftshift(torch.fft.fft2(kspace_upsample(lr, scale).double(), norm="ortho"), dim=(-2, -1))
    spec = torch.fft.fftshift(torch.fft.fft2(x.double(), norm="ortho"), dim=(-2, -1))
    keep = kspace_mask(x.shape[-2:], scale, x.device)
    spec = torch.where(keep, measured, spec)
    out = torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1)), norm="ortho").real
    return out.to(x.dtype)


def kspace_mask(size: tuple[int, int] | torch.Size, scale: int, device: torch.device | None = None) -> Tensor:
    """Boolean (H, W) mask of the centred spectrum's kept (measured) frequencies."""
    from diffsr.data.degrade import kspace_keep_slices

    h, w = size
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    rows, cols = kspace_keep_slices(h, w, scale)
    mask[rows, cols] = True
    return mask


def dps_step(x: Tensor, lr: Tensor, scale: int, step_size: float) -> Tensor:
    """One gradient step on ||bicubic_down(x) - lr||^2 (diffusion posterior sampling style)."""
    from diffsr.data.degrade import bicubic_down

    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        err = (bicubic_down(xg, scale, clamp=False) - lr).pow(2).sum()
        (grad,) = torch.autograd.grad(err, xg)
    return x - step_size * grad


def make_x0_hook(model: Any, lr: Tensor, scale: int, sample_cfg: Any, degradation: str) -> Callable[
    [Tensor, Tensor, Latent], Tensor
]:
    """A sampler hook ``(z0_hat, t, zc) -> z0_hat`` projecting each estimate onto the LR data."""
    mode = sample_cfg.consistency
    iters = sample_cfg.consistency_iters
    guidance = sample_cfg.guidance
    codec = model.codec
    h_lr, w_lr = lr.shape[-2:]

    def hook(z0_hat: Tensor, t: Tensor, zc: Latent) -> Tensor:
        x = codec.decode(zc.with_z(z0_hat))
        # the sampler may pad to the codec's multiple: project the valid region only
        hv, wv = h_lr * scale, w_lr * scale
        valid = x[..., :hv, :wv]
        meas = lr.to(x.device, x.dtype)
        if guidance > 0:
            valid = dps_step(valid, meas, scale, guidance)
        if mode == "kspace":
            valid = kspace_project(valid, meas, scale)
        elif mode == "backprojection":
            valid = back_project(valid, meas, scale, iters)
        x = x.clone()
        x[..., :hv, :wv] = valid
        return codec.encode(x).z

    return hook
