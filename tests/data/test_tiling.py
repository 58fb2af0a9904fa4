"""Tiled application equals whole-image application, without seams, within bounded memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffsr.core.errors import ConfigError
from diffsr.data.tiling import tile_starts, tile_window, tiled_apply


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap", "multiple"),
    [(64, 64, 32, 8, 1), (100, 77, 32, 8, 4), (50, 131, 48, 16, 8), (33, 40, 16, 4, 2)],
)
def test_pointwise_fn_is_reproduced_exactly(h: int, w: int, tile: int, overlap: int, multiple: int) -> None:
    x = rand(2, 3, h, w)
    for fn in (lambda t: t, torch.sigmoid, lambda t: 2 * t**2 - 1):
        out = tiled_apply(fn, x, tile=tile, overlap=overlap, multiple=multiple)
        torch.testing.assert_close(out, fn(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("kernel", "overlap"), [(3, 8), (5, 8), (3, 4)])
def test_local_conv_matches_whole_image(kernel: int, overlap: int) -> None:
    # a conv with receptive-field radius <= overlap // 4 sees tile borders only where the window is 0
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, kernel, padding=kernel // 2).double()
    x = rand(1, 2, 90, 70, seed=1)
    with torch.no_grad():
        whole = conv(x)
        tiled = tiled_apply(conv, x, tile=32, overlap=overlap)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-4)


def test_no_seams_with_inconsistent_tiles() -> None:
    # each tile is offset by its own mean (a model that is not translation invariant); blended
    # output must stay smooth where hard stitching would jump
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96, dtype=torch.float64),
                            torch.linspace(0, 1, 96, dtype=torch.float64), indexing="ij")
    x = (0.3 * yy + 0.7 * xx)[None, None]

    def fn(t: torch.Tensor) -> torch.Tensor:
        return t + t.mean()

    blended = tiled_apply(fn, x, tile=32, overlap=12)
    hard = x.clone()
    for y0 in tile_starts(96, 32, 0):
        for x0 in tile_starts(96, 32, 0):
            hard[..., y0 : y0 + 32, x0 : x0 + 32] = fn(x[..., y0 : y0 + 32, x0 : x0 + 32])
    jump = (hard.diff(dim=-1).abs().max() - 0.7 / 95).item()
    excess = (blended.diff(dim=-1).abs().max() - 0.7 / 95).item()
    assert jump > 0.05 and excess < 0.2 * jump
    excess_y = (blended.diff(dim=-2).abs().max() - 0.3 / 95).item()
    assert excess_y < 0.2 * jump


def test_tiles_have_the_requested_size_and_memory_is_bounded() -> None:
    seen: list[tuple[int, int]] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        return t * 1.0

    x = rand(1, 1, 130, 75)
    out = tiled_apply(fn, x, tile=40, overlap=8, multiple=8)
    assert out.shape == x.shape
    assert set(seen) == {(40, 40)}
    assert len(seen) == len(tile_starts(130, 40, 8)) * len(tile_starts(75, 40, 8))


def test_small_image_is_padded_to_the_multiple_and_cropped_back() -> None:
    seen: list[tuple[int, int]] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        assert t.shape[-2] % 8 == 0 and t.shape[-1] % 8 == 0
        seen.append(tuple(t.shape[-2:]))
        return 1 - t

    x = rand(2, 1, 13, 21)
    out = tiled_apply(fn, x, tile=64, overlap=8, multiple=8)
    torch.testing.assert_close(out, 1 - x, rtol=0, atol=1e-12)
    assert seen == [(16, 24)]


def test_output_channels_may_differ() -> None:
    x = rand(1, 1, 50, 50)
    out = tiled_apply(lambda t: t.repeat(1, 3, 1, 1), x, tile=24, overlap=4)
    torch.testing.assert_close(out, x.repeat(1, 3, 1, 1), rtol=0, atol=1e-12)


def test_gradients_flow_through_tiles() -> None:
    x = rand(1, 1, 40, 40).requires_grad_(True)
    weight = torch.ones(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    out = tiled_apply(lambda t: F.conv2d(t, weight, padding=1), x, tile=24, overlap=8)
    (grad,) = torch.autograd.grad(out.sum(), weight)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_window_shape() -> None:
    w = tile_window(32, left=True, right=False, overlap=8, dtype=torch.float64)
    assert (w[:2] == 0).all() and (w[2:6] > 0).all() and (w[2:6] < 1).all() and (w[6:] == 1).all()
    assert (w[2:6].diff() > 0).all()
    both = tile_window(32, left=True, right=True, overlap=8, dtype=torch.float64)
    torch.testing.assert_close(both, both.flip(0))


def test_bad_tile_settings() -> None:
    x = rand(1, 1, 32, 32)
    with pytest.raises(ConfigError, match="overlap"):
        tiled_apply(lambda t: t, x, tile=16, overlap=8)
    with pytest.raises(ConfigError, match="multiple"):
        tiled_apply(lambda t: t, x, tile=4, overlap=0, multiple=8)
