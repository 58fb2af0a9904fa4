"""Bicubic resizing: PyTorch's kernel (a = -0.75) or MATLAB ``imresize``'s (a = -0.5).

``bicubic_down`` makes LR images and ``upsample`` the condition ``lr_up`` every model sees;
both take ``kernel="torch"`` (``F.interpolate``, the default everywhere in diffsr) or
``kernel="matlab"`` (:func:`imresize_matlab`: antialiased shrinking and mirrored borders, the
convention of most published SR tables).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from diffsr.core.shapes import check_image

__all__ = ["Kernel", "bicubic_down", "imresize_matlab", "imresize_matrix", "lr_size", "upsample"]


def lr_size(h: int, w: int, scale: int) -> tuple[int, int]:
    """(h // scale, w // scale); ValueError for an image smaller than the scale."""
    if h < scale or w < scale:
        raise ValueError(f"image {h}x{w} is smaller than scale {scale}")
    return h // scale, w // scale


Kernel = Literal["torch", "matlab"]


def bicubic_down(hr: Tensor, scale: int, *, clamp: bool = True, kernel: Kernel = "torch") -> Tensor:
    """Antialiased bicubic downsampling to (H // scale, W // scale), clamped to [0, 1].

    kernel "torch" (default): ``F.interpolate(mode="bicubic", antialias=True,
    align_corners=False)``, PyTorch's cubic a = -0.75 stretched by ``scale``. kernel "matlab":
    MATLAB ``imresize`` (a = -0.5, antialiased, mirrored borders; :func:`imresize_matlab`), the
    convention of most published SR tables. Either filters high frequencies before decimation
    and keeps a constant image constant. ``clamp=False`` for signed data (residuals) and for
    gradients that must not be cut.
    """
    check_image(hr, "hr")
    size = lr_size(hr.shape[-2], hr.shape[-1], scale)
    if kernel == "matlab":
        out = imresize_matlab(hr, size)
    else:
        out = F.interpolate(hr, size=size, mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0) if clamp else out


def upsample(lr: Tensor, scale: int, *, clamp: bool = True, kernel: Kernel = "torch") -> Tensor:
    """Bicubic upsampling to (H * scale, W * scale), align_corners=False, clamped to [0, 1].

    This is the condition ``lr_up`` fed to every model (train and inference alike). Bicubic
    overshoots near edges; ``clamp=False`` keeps the raw interpolant (use it for signed data
    such as back-projection residuals). kernel "matlab": MATLAB ``imresize`` (a = -0.5,
    mirrored borders) instead of PyTorch's a = -0.75.
    """
    check_image(lr, "lr")
    h, w = lr.shape[-2:]
    if kernel == "matlab":
        out = imresize_matlab(lr, (h * scale, w * scale))
    else:
        out = F.interpolate(lr, size=(h * scale, w * scale), mode="bicubic", align_corners=False)
    return out.clamp(0.0, 1.0) if clamp else out


def _matlab_cubic(x: Tensor) -> Tensor:
    """MATLAB's cubic kernel (Keys, a = -0.5)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return inner + outer


def imresize_matrix(in_len: int, out_len: int) -> Tensor:
    """The (out_len, in_len) float64 matrix of MATLAB ``imresize(..., 'bicubic')`` along one axis.

    As MATLAB's ``contributions``: output pixel x (1-based) sits at input position
    ``u = x / s + 0.5 (1 - 1 / s)`` with s = out_len / in_len; when shrinking (s < 1) the
    kernel is stretched by 1 / s and scaled by s (antialiasing); weights are normalised to sum
    to one; indices outside the image are mirrored ('symmetric': the edge pixel repeats).
    """
    s = out_len / in_len
    width = 4.0 / s if s < 1 else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / s + 0.5 * (1 - 1 / s)
    left = torch.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = s * _matlab_cubic(s * dist) if s < 1 else _matlab_cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    cols = mirror[((idx.long() - 1) % (2 * in_len))]
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, cols, weights)
    return matrix


def imresize_matlab(x: Tensor, size: tuple[int, int]) -> Tensor:
    """MATLAB ``imresize(x, size, 'bicubic')`` of (B, C, H, W): separable, float64 inside, in x's dtype."""
    check_image(x, "x")
    h, w = x.shape[-2:]
    a_h = imresize_matrix(h, size[0]).to(x.device)
    a_w = imresize_matrix(w, size[1]).to(x.device)
    return (a_h @ x.double() @ a_w.T).to(x.dtype if x.is_floating_point() else torch.float32)
