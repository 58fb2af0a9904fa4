"""Latent perceptual loss (LPL, Berrada et al. 2024) on the VAE decoder's features.

    LPL(z0_hat, z0) = sum_l 2^-l * mean_{c,h,w} (n(phi_l(z0_hat)) - n(phi_l(z0)))^2

phi_l: the first ``layers`` feature maps returned by ``codec.decoder_features(z)`` (mid block,
then up blocks, in decoding order; l = 0, 1, ...); n: per-sample, per-channel normalisation
over H, W ((f - mean) / (std + 1e-6)). Features of the target z0 are computed without
gradient; the prediction's keep theirs (through the decoder to z0_hat). A mask (B, 1, H, W) is
resized to each feature map by nearest neighbour and restricts the mean (a masked mean per
layer). Gate it to high SNR (small t) in the loss stack: at high noise x0_hat is a blur and its
decoder features are meaningless.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.core.shapes import check_mask
from diffsr.losses.base import TERMS, TermBase
from diffsr.losses.pixel import masked_mean

__all__ = ["LatentPerceptualLoss", "normalize_channels"]

log = logging.getLogger(__name__)


def normalize_channels(f: Tensor, eps: float = 1e-6) -> Tensor:
    """(B, C, H, W) -> per-sample, per-channel zero-mean, unit-std over (H, W)."""
    mean = f.mean(dim=(-2, -1), keepdim=True)
    std = f.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (f - mean) / (std + eps)


class LatentPerceptualLoss(nn.Module):
    """Per-sample LPL (B,) for latents; ``codec`` must provide ``decoder_features(z) -> list[Tensor]``.

    The codec is held by reference, not registered as a submodule: it belongs to the model (and
    its checkpoint), not to the loss.
    """

    def __init__(self, codec: object, layers: int = 3) -> None:
        super().__init__()
        if not callable(getattr(codec, "decoder_features", None)):
            raise ConfigError("latent_perceptual needs the vae codec")
        if layers < 1:
            raise ConfigError(f"latent_perceptual layers must be >= 1, got {layers}")
        object.__setattr__(self, "codec", codec)
        self.layers = layers
        self._warned = False

    def forward(self, z0_hat: Tensor, z0: Tensor, mask: Tensor | None = None) -> Tensor:
        if z0_hat.shape != z0.shape:
            raise ValueError(f"z0: expected {tuple(z0_hat.shape)} like z0_hat, got {tuple(z0.shape)}")
        if mask is not None and (mask.ndim != 4 or mask.shape[:2] != (z0.shape[0], 1)):
            check_mask(mask, z0)
        codec = self.codec  # type: ignore[attr-defined]
        feats_hat = list(codec.decoder_features(z0_hat))
        with torch.no_grad():
            feats = list(codec.decoder_features(z0))
        n = min(self.layers, len(feats_hat))
        if n < self.layers and not self._warned:
            log.warning("latent_perceptual: codec gives %d feature maps, %d requested", n, self.layers)
            self._warned = True
        total: Tensor | None = None
        for level in range(n):
            f_hat, f = feats_hat[level], feats[level]
            diff = (normalize_channels(f_hat) - normalize_channels(f)).square()
            m = None if mask is None else F.interpolate(mask.to(diff.dtype), size=diff.shape[-2:])
            value = 2.0**-level * masked_mean(diff, m)
            total = value if total is None else total + value
        if total is None:
            raise ConfigError("latent_perceptual: the codec's decoder_features returned no feature map")
        return total

class LatentPerceptualTerm(TermBase):
    """Latent perceptual loss on VAE decoder features (VAE codec only)."""

    name: Literal["latent_perceptual"]
    layers: int = Field(3, ge=1)


@TERMS.register("latent_perceptual", config=LatentPerceptualTerm, space="latent", requires_codec="vae")
def _build_latent_perceptual(cfg: LatentPerceptualTerm, *, codec: Any = None, **_: Any) -> nn.Module:
    if codec is None:
        raise ConfigError(f"term '{cfg.key}' (latent_perceptual) needs the VAE codec (codec.name: vae)")
    return LatentPerceptualLoss(codec=codec, layers=cfg.layers)
