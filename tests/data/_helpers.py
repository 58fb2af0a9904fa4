"""Shared by the data tests: an independent bicubic reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bicubic_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Independent reference for the bicubic degradation."""
    h, w = hr.shape[-2:]
    return F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", antialias=True,
                         align_corners=False).clamp(0, 1)
