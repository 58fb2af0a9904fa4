"""Focal frequency loss (Jiang et al., ICCV 2021), per sample, always in float32.

    loss = mean(w * |F(pred) - F(target)|^2),   F = 2-D DFT (torch.fft.fft2, norm="ortho")
    w    = |F(pred) - F(target)|^alpha  (optionally log(w + 1)), scaled to [0, 1], NaN -> 0, detached

Matches the official ``focal_frequency_loss.FocalFrequencyLoss(loss_weight=1, alpha, patch_factor=1,
ave_spectrum=False, log_matrix, batch_matrix)``, which returns the batch mean of our per-sample
values. As there, the weight is normalised by its maximum per image *and channel*
(``batch_matrix=False``) or over the whole batch (``batch_matrix=True``).

The FFT runs in float32 (float64 inputs stay float64) with autocast disabled, and the result is
float32 even under bf16/fp16 autocast: a half-precision FFT loses the small high-frequency
differences this loss exists to weight.

Masks: a mask (B, 1, H, W) multiplies both images before the FFT, so invalid (padded) pixels
are zero in both and contribute no difference; the mean still runs over the whole spectrum.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from diffsr.core.shapes import check_image, check_mask
from diffsr.losses.base import TERMS, TermBase

__all__ = ["FocalFrequencyLoss", "focal_frequency_loss"]


def focal_frequency_loss(
    pred: Tensor,
    target: Tensor,
    *,
    alpha: float = 1.0,
    log_matrix: bool = False,
    batch_matrix: bool = False,
    mask: Tensor | None = None,
) -> Tensor:
    """Per-sample focal frequency loss (B,), float32 (float64 for float64 inputs).

    pred, target: (B, C, H, W). alpha: exponent of the spectrum weight. log_matrix: use
    log(w + 1). batch_matrix: normalise the weight by the batch maximum instead of per image
    and channel. mask: (B, 1, H, W), multiplies both images before the FFT.
    """
    check_image(pred, "pred")
    if pred.shape != target.shape:
        raise ValueError(f"target: expected {tuple(pred.shape)} like pred, got {tuple(target.shape)}")
    check_mask(mask, pred)
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.to(dtype), target.to(dtype)
        if mask is not None:
            mask = mask.to(dtype)
            pred, target = pred * mask, target * mask
        diff = torch.fft.fft2(pred, norm="ortho") - torch.fft.fft2(target, norm="ortho")
        distance = diff.real.square() + diff.imag.square()
        # the weight only rescales the spectral error: no gradient flows through it
        with torch.no_grad():
            weight = distance.sqrt() ** alpha
            if log_matrix:
                weight = torch.log(weight + 1.0)
            if batch_matrix:
                weight = weight / weight.max()
            else:
                weight = weight / weight.amax(dim=(-2, -1), keepdim=True)
            weight = torch.nan_to_num(weight, nan=0.0).clamp_(0.0, 1.0)
        return (weight * distance).mean(dim=(1, 2, 3))


class FocalFrequencyLoss(nn.Module):
    """Module form of :func:`focal_frequency_loss`: forward(pred, target, mask=None) -> (B,)."""

    def __init__(self, alpha: float = 1.0, log_matrix: bool = False, batch_matrix: bool = False) -> None:
        super().__init__()
        self.alpha, self.log_matrix, self.batch_matrix = alpha, log_matrix, batch_matrix

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return focal_frequency_loss(
            pred, target, alpha=self.alpha, log_matrix=self.log_matrix, batch_matrix=self.batch_matrix,
            mask=mask,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, log_matrix={self.log_matrix}, batch_matrix={self.batch_matrix}"

class FFLTerm(TermBase):
    """Focal frequency loss (Jiang et al. 2021), computed in float32."""

    name: Literal["ffl"]
    alpha: float = Field(1.0, ge=0)
    log_matrix: bool = False
    batch_matrix: bool = False


@TERMS.register("ffl", config=FFLTerm, space="pixel")
def _build_ffl(cfg: FFLTerm, **_: Any) -> nn.Module:
    return FocalFrequencyLoss(alpha=cfg.alpha, log_matrix=cfg.log_matrix, batch_matrix=cfg.batch_matrix)
