"""Pixel losses (L1, L2, Charbonnier) and the masked per-sample mean every term shares.

Every function returns a per-sample loss of shape (B,): the mean over channels and the valid
pixels of ``mask`` (B, 1, H, W), 1 = valid. A sample whose mask is empty gets 0 (not NaN), so a
fully padded sample contributes nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from diffsr.core.shapes import check_image, check_mask
from diffsr.losses.base import TERMS, TermBase

__all__ = [
    "CharbonnierLoss",
    "L1Loss",
    "L2Loss",
    "charbonnier_loss",
    "l1_loss",
    "l2_loss",
    "masked_mean",
]


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean of ``x`` (B, C, H, W) over channels and the pixels where ``mask`` is set.

    mask: (B, 1, H, W) (broadcast over channels) or (B, C, H, W); weights in [0, 1], 1 = valid.
    Returns (B,). A sample with an all-zero mask gives 0.
    """
    check_image(x)
    if mask is None:
        return x.mean(dim=(1, 2, 3))
    if mask.shape[1] != 1:
        check_mask(mask[:, :1], x)
        if mask.shape != x.shape:
            raise ValueError(f"mask: expected (B, 1, H, W) or {tuple(x.shape)}, got {tuple(mask.shape)}")
        denom = mask.sum(dim=(1, 2, 3))
    else:
        check_mask(mask, x)
        denom = mask.sum(dim=(1, 2, 3)) * x.shape[1]
    mask = mask.to(x.dtype)
    num = (x * mask).sum(dim=(1, 2, 3))
    # an empty mask gives num = 0 and denom = 0: the clamp turns 0/0 into 0 without a NaN gradient
    return num / denom.to(num.dtype).clamp_min(torch.finfo(num.dtype).tiny)


def _pair(pred: Tensor, target: Tensor) -> None:
    check_image(pred, "pred")
    if pred.shape != target.shape:
        raise ValueError(f"target: expected {tuple(pred.shape)} like pred, got {tuple(target.shape)}")


def l1_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean absolute error (B,)."""
    _pair(pred, target)
    return masked_mean((pred - target).abs(), mask)


def l2_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean squared error (B,)."""
    _pair(pred, target)
    return masked_mean((pred - target).square(), mask)


def charbonnier_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-3) -> Tensor:
    """Per-sample Charbonnier loss mean(sqrt((pred - target)^2 + eps^2)) (B,).

    A smooth L1: about |d| for |d| >> eps, with a finite gradient at d = 0. Note that it is
    ``eps`` (not 0) for identical images, as in BasicSR.
    """
    _pair(pred, target)
    return masked_mean(((pred - target).square() + eps * eps).sqrt(), mask)


class L1Loss(nn.Module):
    """Module form of :func:`l1_loss`."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return l1_loss(pred, target, mask)


class L2Loss(nn.Module):
    """Module form of :func:`l2_loss`."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return l2_loss(pred, target, mask)


class CharbonnierLoss(nn.Module):
    """Module form of :func:`charbonnier_loss`."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return charbonnier_loss(pred, target, mask, eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class PixelTerm(TermBase):
    """L1 / L2 on the decoded x0_hat vs HR (pixel space)."""

    name: Literal["l1", "l2"]


class CharbonnierTerm(TermBase):
    """Charbonnier sqrt(d^2 + eps^2) on the decoded x0_hat vs HR (pixel space)."""

    name: Literal["charbonnier"]
    eps: float = Field(1e-3, gt=0)


@TERMS.register("l1", config=PixelTerm, space="pixel")
def _build_l1(cfg: PixelTerm, **_: Any) -> nn.Module:
    return L1Loss()


@TERMS.register("l2", config=PixelTerm, space="pixel")
def _build_l2(cfg: PixelTerm, **_: Any) -> nn.Module:
    return L2Loss()


@TERMS.register("charbonnier", config=CharbonnierTerm, space="pixel")
def _build_charbonnier(cfg: CharbonnierTerm, **_: Any) -> nn.Module:
    return CharbonnierLoss(eps=cfg.eps)
