"""Shared by the data tests (and the eval CLI tests): references and image writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def bicubic_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Independent reference for the bicubic degradation."""
    h, w = hr.shape[-2:]
    return F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", antialias=True,
                         align_corners=False).clamp(0, 1)


def _rgb_png(path: Path, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.stack([(xx * 7) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1).astype(np.float64)
    rgb = np.clip(rgb + rng.integers(-10, 10, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)
    return rgb
