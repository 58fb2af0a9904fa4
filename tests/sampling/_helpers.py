"""Shared by the inference tests: a model built in memory and a smooth LR image."""

from __future__ import annotations

from pathlib import Path

import torch

from diffsr.config import load_config
from diffsr.model import build_model
from diffsr.sampling.infer import LoadedModel


def _loaded(preset: str, overrides: list[str] | None = None) -> LoadedModel:
    """A model in blend tiling mode (exact mode: tests/nets/test_exact_tiling.py)."""
    torch.manual_seed(0)
    config = load_config(preset, [*(overrides or []), "sample.tile_mode=blend"])
    model = build_model(config).eval()
    return LoadedModel(model, config, Path("mem"), 0, False)


def _lr(h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = 0.5 + 0.3 * torch.sin(6 * x) * torch.cos(4 * y)
    return (base + 0.05 * torch.rand(h, w, generator=g)).clamp(0, 1)[None, None]
