"""Edge and flat-region losses driven by the ground truth's Sobel edge mask.

- :func:`sobel`: per-channel gradient magnitude with the normalised Sobel kernels
  ([-1, 0, 1] x [1, 2, 1] / 8), so a linear ramp of slope s gives magnitude s and a unit step
  edge gives 0.5 on the two pixels beside it; replicate padding keeps the size and gives no
  false edges at the border.
- :func:`edge_mask`: GT Sobel magnitude averaged over channels > ``threshold`` (data in [0, 1]).
- :func:`edge_loss`: L1 between the Sobel gradients (gx, gy) of pred and target, |dgx| + |dgy|,
  averaged over channels and the edge pixels (edges sharpen, placed where the truth has them).
- :func:`flat_loss`: high-frequency energy of the prediction, the absolute 4-neighbour
  Laplacian of pred, averaged over channels and the flat pixels: those outside the edge mask
  dilated by one pixel (the Laplacian of a correct edge reaches one pixel beyond its Sobel
  response on blurred edges). It penalises noise and ringing where the truth is smooth.

Both are per-sample (B,) masked means; a sample with no edge (or no flat) pixel gets 0.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from diffsr.core.shapes import check_image, check_mask
from diffsr.losses.base import TERMS, TermBase
from diffsr.losses.pixel import masked_mean

__all__ = ["EdgeLoss", "FlatLoss", "edge_loss", "edge_mask", "flat_loss", "laplacian", "sobel", "sobel_xy"]

_SOBEL_EPS = 1e-12  # inside the square root: keeps the gradient of |grad| finite on flat images


def _depthwise(x: Tensor, kernel: list[list[float]]) -> Tensor:
    """3x3 depthwise filter of (B, C, H, W) with replicate padding."""
    c = x.shape[1]
    k = torch.tensor(kernel, dtype=x.dtype, device=x.device)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)


def sobel_xy(x: Tensor) -> tuple[Tensor, Tensor]:
    """Normalised Sobel derivatives (gx along W, gy along H) of (B, C, H, W), each (B, C, H, W)."""
    check_image(x)
    gx = _depthwise(x, [[-0.125, 0.0, 0.125], [-0.25, 0.0, 0.25], [-0.125, 0.0, 0.125]])
    gy = _depthwise(x, [[-0.125, -0.25, -0.125], [0.0, 0.0, 0.0], [0.125, 0.25, 0.125]])
    return gx, gy


def sobel(x: Tensor) -> Tensor:
    """Sobel gradient magnitude sqrt(gx^2 + gy^2 + 1e-12) of (B, C, H, W), per channel."""
    gx, gy = sobel_xy(x)
    return (gx.square() + gy.square() + _SOBEL_EPS).sqrt()


def laplacian(x: Tensor) -> Tensor:
    """4-neighbour Laplacian of (B, C, H, W) with replicate padding."""
    check_image(x)
    return _depthwise(x, [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def edge_mask(target: Tensor, threshold: float) -> Tensor:
    """(B, 1, H, W) float 0/1: the target's Sobel magnitude, averaged over channels, > threshold."""
    with torch.no_grad():
        return (sobel(target.detach()).mean(dim=1, keepdim=True) > threshold).to(target.dtype)


def _combine(region: Tensor, mask: Tensor | None, like: Tensor) -> Tensor:
    check_mask(mask, like)
    return region if mask is None else region * mask.to(region.dtype)


def _check_pair(pred: Tensor, target: Tensor) -> None:
    check_image(pred, "pred")
    if pred.shape != target.shape:
        raise ValueError(f"target: expected {tuple(pred.shape)} like pred, got {tuple(target.shape)}")


def edge_loss(pred: Tensor, target: Tensor, *, threshold: float, mask: Tensor | None = None) -> Tensor:
    """Per-sample L1 of Sobel gradients, |gx_p - gx_t| + |gy_p - gy_t|, inside the GT edge mask (B,)."""
    _check_pair(pred, target)
    region = _combine(edge_mask(target, threshold), mask, pred)
    gx_p, gy_p = sobel_xy(pred)
    gx_t, gy_t = sobel_xy(target)
    return masked_mean((gx_p - gx_t).abs() + (gy_p - gy_t).abs(), region)


def flat_loss(pred: Tensor, target: Tensor, *, threshold: float, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean |Laplacian(pred)| outside the GT edge mask dilated by one pixel (B,)."""
    _check_pair(pred, target)
    edges = F.max_pool2d(edge_mask(target, threshold), 3, stride=1, padding=1)
    region = _combine(1 - edges, mask, pred)
    return masked_mean(laplacian(pred).abs(), region)


class EdgeLoss(nn.Module):
    """Module form of :func:`edge_loss`."""

    def __init__(self, threshold: float = 0.1) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return edge_loss(pred, target, threshold=self.threshold, mask=mask)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


class FlatLoss(nn.Module):
    """Module form of :func:`flat_loss`."""

    def __init__(self, threshold: float = 0.1) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return flat_loss(pred, target, threshold=self.threshold, mask=mask)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"

class EdgeTerm(TermBase):
    """Edge (L1 of Sobel gradients inside the GT edge mask) or flat (HF energy outside it)."""

    name: Literal["edge", "flat"]
    threshold: float = Field(0.1, gt=0)  # on the GT Sobel magnitude, data in [0, 1]


@TERMS.register("edge", config=EdgeTerm, space="pixel")
def _build_edge(cfg: EdgeTerm, **_: Any) -> nn.Module:
    return EdgeLoss(threshold=cfg.threshold)


@TERMS.register("flat", config=EdgeTerm, space="pixel")
def _build_flat(cfg: EdgeTerm, **_: Any) -> nn.Module:
    return FlatLoss(threshold=cfg.threshold)
