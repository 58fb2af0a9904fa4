"""Tiled application of a model to images of any size, with seamless blending.

:func:`tiled_apply` runs ``fn`` on overlapping ``tile`` x ``tile`` crops, one at a time, and
blends the results with a separable window: 1 in the tile's interior, a raised-cosine ramp
over the ``overlap`` band at edges shared with a neighbouring tile, preceded by a margin of
``overlap // 4`` pixels of weight 0, where ``fn`` sees the artificial tile border (so any
``fn`` whose receptive field radius is at most that margin gives exactly the untiled
result). Edges on the image border are not tapered. Weights are normalised, so a pointwise
``fn`` is reproduced exactly whatever the window.

Memory: besides one tile at a time, only the output accumulator (B, C', H, W) and two 1-D
weight profiles are allocated (the window is separable and the tiles form a grid, so the
total weight is the outer product of the per-axis sums).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from diffsr.core.errors import ConfigError
from diffsr.core.shapes import check_image


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size`` with at least ``overlap`` shared.

    Tiles advance by ``tile - overlap`` rounded down to a multiple of ``align`` (so with ``size``
    and ``tile`` multiples of ``align`` every start is one); the last one is shifted inward to
    end at ``size``.
    """
    if size <= tile:
        return [0]
    step = tile - overlap
    if align > 1:
        step = max(align, (step // align) * align)
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return sorted(set(starts))


def tile_window(length: int, *, left: bool, right: bool, overlap: int, dtype: torch.dtype,
                device: torch.device | str = "cpu") -> Tensor:
    """The 1-D blending window of a tile (see the module docstring).

    left / right: whether that edge is shared with a neighbouring tile (tapered) or lies on the
    image border (not tapered).
    """
    w = torch.ones(length, dtype=torch.float64)
    margin = overlap // 4
    ramp_len = overlap - 2 * margin
    if overlap > 0:
        j = torch.arange(ramp_len, dtype=torch.float64)
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (j + 1) / (ramp_len + 1))  # in (0, 1), rising
        edge = torch.cat([torch.zeros(margin, dtype=torch.float64), ramp])
        if left:
            w[: edge.numel()] *= edge
        if right:
            w[length - edge.numel():] *= edge.flip(0)
    return w.to(dtype=dtype, device=device)


def _axis_plan(size: int, tile: int, overlap: int, multiple: int, align: bool) -> tuple[int, int, list[int]]:
    """(padded size, tile length, starts) along one axis."""
    if size < tile:
        padded = math.ceil(size / multiple) * multiple
        return padded, padded, [0]
    if align:
        padded = math.ceil(size / multiple) * multiple
        return padded, tile, tile_starts(padded, tile, overlap, multiple)
    return size, tile, tile_starts(size, tile, overlap)


def tiled_apply(
    fn: Callable[..., Tensor],
    lr_up: Tensor,
    *,
    tile: int,
    overlap: int,
    multiple: int = 1,
    scale: int = 1,
    with_origin: bool = False,
) -> Tensor:
    """``fn`` applied to ``lr_up`` (B, C, H, W) tile by tile and blended; returns (B, C', H*scale, W*scale).

    tile: tile side, rounded down to a multiple of ``multiple`` (e.g. the codec's
    ``downsample``). overlap: pixels shared by neighbouring tiles; must be < tile / 2.
    ``fn`` must return a tensor with the tile's spatial size times ``scale`` (``scale > 1``:
    a feed-forward SR net tiled on the LR grid; windows and blending are then on the output
    grid). An image side smaller than the tile is padded (reflect, else replicate) up to a
    multiple of ``multiple`` and cropped back.
    with_origin: call ``fn(crop, y0, x0)`` with the crop's offset in the (padded) input; every
    side is then padded to a multiple of ``multiple`` and every offset is a multiple of it (so a
    latent-grid field, e.g. sampling noise, can be sliced per tile).
    Raises ConfigError for an impossible tile / overlap / multiple.
    """
    check_image(lr_up, "lr_up")
    if multiple < 1:
        raise ConfigError(f"multiple must be >= 1, got {multiple}")
    tile = (tile // multiple) * multiple
    if tile < 1:
        raise ConfigError(f"tile must be at least the size multiple {multiple}")
    if overlap < 0 or 2 * overlap >= tile:
        raise ConfigError(f"overlap {overlap} must be >= 0 and less than half the tile {tile}")
    if scale < 1:
        raise ConfigError(f"scale must be >= 1, got {scale}")
    b, _, h, w = lr_up.shape
    ph, th, ys = _axis_plan(h, tile, overlap, multiple, with_origin)
    pw, tw, xs = _axis_plan(w, tile, overlap, multiple, with_origin)
    x = lr_up
    if ph > h or pw > w:
        mode = "reflect" if ph - h < h and pw - w < w else "replicate"
        x = F.pad(lr_up, (0, pw - w, 0, ph - h), mode=mode)

    k = scale

    def windows(starts: list[int], length: int, size: int) -> list[Tensor]:
        return [
            tile_window(length * k, left=s > 0, right=s + length < size, overlap=overlap * k,
                        dtype=torch.float64)
            for s in starts
        ]

    wys, wxs = windows(ys, th, ph), windows(xs, tw, pw)
    sum_y = torch.zeros(ph * k, dtype=torch.float64)
    sum_x = torch.zeros(pw * k, dtype=torch.float64)
    for s, wy in zip(ys, wys, strict=True):
        sum_y[s * k : (s + th) * k] += wy
    for s, wx in zip(xs, wxs, strict=True):
        sum_x[s * k : (s + tw) * k] += wx
    if not (sum_y > 0).all() or not (sum_x > 0).all():  # an invariant of the window design
        raise RuntimeError(f"tiling leaves pixels uncovered (tile {tile}, overlap {overlap})")

    out: Tensor | None = None
    for y0, wy in zip(ys, wys, strict=True):
        for x0, wx in zip(xs, wxs, strict=True):
            crop = x[..., y0 : y0 + th, x0 : x0 + tw]
            result = fn(crop, y0, x0) if with_origin else fn(crop)  # type: ignore[call-arg]
            if result.ndim != 4 or result.shape[0] != b or result.shape[-2:] != (th * k, tw * k):
                raise ValueError(
                    f"fn: expected ({b}, C, {th * k}, {tw * k}) for a tile, got {tuple(result.shape)}"
                )
            if out is None:
                out = result.new_zeros((b, result.shape[1], ph * k, pw * k))
            weight = (wy[:, None] * wx[None, :]).to(dtype=result.dtype, device=result.device)
            out[..., y0 * k : (y0 + th) * k, x0 * k : (x0 + tw) * k] += result * weight
    assert out is not None
    # normalise in place by the separable total weight: no image-sized weight array
    out.div_(sum_y.to(dtype=out.dtype, device=out.device)[:, None])
    out.div_(sum_x.to(dtype=out.dtype, device=out.device)[None, :])
    return out[..., : h * k, : w * k]
