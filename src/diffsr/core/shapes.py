"""Shape checks whose errors say what arrived."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no runtime torch import: `diffsr --help` stays fast
    from torch import Tensor


def check_image(x: Tensor, name: str = "x") -> None:
    """Require a (B, C, H, W) tensor."""
    if x.ndim != 4:
        raise ValueError(f"{name}: expected (B, C, H, W), got {tuple(x.shape)}")


def check_mask(mask: Tensor | None, like: Tensor, name: str = "mask") -> None:
    """Require ``mask`` to be None or (B, 1, H, W) matching ``like``'s batch and size."""
    if mask is None:
        return
    b, _, h, w = like.shape
    if mask.shape != (b, 1, h, w):
        raise ValueError(f"{name}: expected ({b}, 1, {h}, {w}), got {tuple(mask.shape)}")
