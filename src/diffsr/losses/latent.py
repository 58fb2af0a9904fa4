"""Latent-space loss terms: per-sample |z0_hat - z0|^p, no decode (masks resized to the latent grid)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffsr.losses.base import TERMS, TermBase

__all__ = ["LatentL1Loss", "LatentL2Loss", "LatentTerm", "latent_error"]


def _resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """A (B, 1, H, W) image-space mask at a latent size (area average: fraction of valid pixels)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask.to(torch.promote_types(mask.dtype, torch.float32)), size=size, mode="area")


def latent_error(z0_hat: Tensor, z0: Tensor, mask: Tensor | None = None, *, p: int = 1) -> Tensor:
    """Per-sample mean |z0_hat - z0|^p (B,), masked (the mask is resized to the latent grid).

    z0_hat, z0: (B, C, h, w). mask: (B, 1, H, W) at image or latent resolution, 1 = valid.
    """
    if z0_hat.shape != z0.shape:
        raise ValueError(f"z0_hat {tuple(z0_hat.shape)} and z0 {tuple(z0.shape)} differ")
    diff = z0_hat - z0
    err = diff.abs() if p == 1 else diff.pow(2)
    if mask is None:
        return err.flatten(1).mean(1)
    m = _resize_mask(mask, tuple(z0.shape[-2:])).to(err.dtype)
    num = (err * m).flatten(1).sum(1)
    den = (m.flatten(1).sum(1) * err.shape[1]).clamp_min(1e-8)
    return num / den


class LatentL1Loss(nn.Module):
    """Per-sample mean |z0_hat - z0| in the latent space (no decode)."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return latent_error(pred, target, mask, p=1)


class LatentL2Loss(nn.Module):
    """Per-sample mean (z0_hat - z0)^2 in the latent space (no decode)."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return latent_error(pred, target, mask, p=2)


class LatentTerm(TermBase):
    """L1 / L2 between z0_hat and z0 in the latent space (no decode)."""

    name: Literal["latent_l1", "latent_l2"]


@TERMS.register("latent_l1", config=LatentTerm, space="latent")
def _build_latent_l1(cfg: LatentTerm, **_: Any) -> nn.Module:
    return LatentL1Loss()


@TERMS.register("latent_l2", config=LatentTerm, space="latent")
def _build_latent_l2(cfg: LatentTerm, **_: Any) -> nn.Module:
    return LatentL2Loss()
