"""Shared by the codec tests."""

from __future__ import annotations

import torch


def rand_images(b: int, c: int, h: int, w: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
