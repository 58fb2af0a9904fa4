"""SSIM / MS-SSIM: parity with skimage and pytorch_msssim, masks, tiny images, gradients.

References: skimage ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`` averages the interior of its map (a 5-pixel border cropped for
window 11), i.e. exactly our 'valid' windows; pytorch_msssim builds its Gaussian in float32,
hence the looser 1e-5 tolerance against it (1e-7 against skimage, float64 both sides).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim as ref_ms_ssim
from pytorch_msssim import ssim as ref_ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d
from pytorch_msssim.ssim import _ssim as ref_ssim_cs
from skimage.metrics import structural_similarity

import diffsr.losses.ssim as ssim_module
from diffsr.core.errors import ConfigError
from diffsr.losses.ssim import (
    MSSSIM_WEIGHTS,
    MSSSIMLoss,
    SSIMLoss,
    fit_window,
    gaussian_window,
    ms_ssim,
    ssim,
    ssim_map,
)


def _pair(channels: int, h: int, w: int, data_range: float = 1.0, seed: int = 0, batch: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, channels, h, w)) * data_range
    y = np.clip(x + 0.05 * data_range * rng.standard_normal(x.shape), 0, data_range)
    return x, y


def _skimage(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    return structural_similarity(
        x, y, data_range=data_range, channel_axis=0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("data_range", [1.0, 255.0, 4095.0])
def test_ssim_matches_skimage(channels: int, data_range: float) -> None:
    x, y = _pair(channels, 48, 40, data_range, batch=2)
    got = ssim(torch.from_numpy(x), torch.from_numpy(y), data_range=data_range, reduction="none")
    assert got.dtype == torch.float64
    for b in range(2):
        assert got[b].item() == pytest.approx(_skimage(x[b], y[b], data_range), abs=1e-7)
    # the map itself: its mean is skimage's cropped mean
    smap = ssim_map(torch.from_numpy(x), torch.from_numpy(y), data_range=data_range)
    assert smap.shape == (2, channels, 48 - 10, 40 - 10)
    assert smap[0].mean().item() == pytest.approx(_skimage(x[0], y[0], data_range), abs=1e-7)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("data_range", [1.0, 255.0, 4095.0])
def test_ssim_matches_pytorch_msssim(channels: int, data_range: float) -> None:
    x, y = (torch.from_numpy(a) for a in _pair(channels, 40, 44, data_range, batch=3))
    expected = ref_ssim(x, y, data_range=data_range, win_size=11, win_sigma=1.5, size_average=False)
    got = ssim(x, y, data_range=data_range, reduction="none")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert ssim(x, y, data_range=data_range).item() == pytest.approx(expected.mean().item(), abs=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_ms_ssim_matches_pytorch_msssim(channels: int) -> None:
    x, y = (torch.from_numpy(a) for a in _pair(channels, 192, 200, 1.0, batch=2))
    expected = ref_ms_ssim(x, y, data_range=1.0, win_size=11, win_sigma=1.5, size_average=False)
    got = ms_ssim(x, y, data_range=1.0, reduction="none")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_ms_ssim_odd_size_matches_pytorch_msssim() -> None:
    # odd sizes exercise the avg-pool padding (H % 2) between scales
    x, y = (torch.from_numpy(a) for a in _pair(1, 171, 165, 255.0))
    expected = ref_ms_ssim(x, y, data_range=255.0, size_average=False)
    torch.testing.assert_close(ms_ssim(x, y, data_range=255.0, reduction="none"), expected, rtol=0, atol=1e-5)


def test_ms_ssim_small_image_uses_fewer_scales() -> None:
    # 64 px: scales 64, 32, 16 keep >= 11 px, 8 does not -> 3 scales, first 3 weights renormalised
    x, y = (torch.from_numpy(a) for a in _pair(2, 64, 64, 1.0))
    assert ssim_module.msssim_levels(64, 64, 11) == 3
    weights = torch.tensor(MSSSIM_WEIGHTS[:3], dtype=torch.float64)
    weights = weights / weights.sum()
    win = _fspecial_gauss_1d(11, 1.5).repeat(2, 1, 1, 1)
    factors = []
    xs, ys = x, y
    for level in range(3):
        s, cs = ref_ssim_cs(xs, ys, data_range=1.0, win=win)
        factors.append(torch.relu(s if level == 2 else cs) ** weights[level])
        xs, ys = torch.nn.functional.avg_pool2d(xs, 2), torch.nn.functional.avg_pool2d(ys, 2)
    expected = torch.stack(factors).prod(dim=0).mean(dim=1)
    torch.testing.assert_close(ms_ssim(x, y, data_range=1.0, reduction="none"), expected, rtol=0, atol=1e-5)


def test_full_mask_equals_unmasked() -> None:
    x, y = (torch.from_numpy(a) for a in _pair(3, 32, 36, 1.0, batch=2))
    mask = torch.ones(2, 1, 32, 36, dtype=torch.float64)
    torch.testing.assert_close(
        ssim(x, y, data_range=1.0, mask=mask, reduction="none"), ssim(x, y, data_range=1.0, reduction="none")
    )
    torch.testing.assert_close(
        ms_ssim(x, y, data_range=1.0, mask=mask, reduction="none", window=5),
        ms_ssim(x, y, data_range=1.0, reduction="none", window=5),
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_mask_zeroing_columns_equals_skimage_on_the_rest(channels: int) -> None:
    # mask = 1 on columns < 30: the windows wholly inside are exactly the interior windows of the
    # 48 x 30 crop, which is what skimage averages on that crop
    x, y = _pair(channels, 48, 40, 1.0)
    mask = torch.zeros(1, 1, 48, 40, dtype=torch.float64)
    mask[..., :30] = 1
    got = ssim(torch.from_numpy(x), torch.from_numpy(y), data_range=1.0, mask=mask)
    assert got.item() == pytest.approx(_skimage(x[0][..., :30], y[0][..., :30], 1.0), abs=1e-7)


def test_mask_hole_counts_only_windows_outside_it() -> None:
    x, y = (torch.from_numpy(a) for a in _pair(2, 40, 40, 1.0))
    mask = torch.ones(1, 1, 40, 40, dtype=torch.float64)
    mask[..., 12:20, 25:31] = 0
    smap = ssim_map(x, y, data_range=1.0, window=7)  # (1, 2, 34, 34); window (i, j) covers i..i+6
    keep = torch.ones(34, 34, dtype=torch.bool)
    for i in range(34):
        for j in range(34):
            if i + 6 >= 12 and i <= 19 and j + 6 >= 25 and j <= 30:
                keep[i, j] = False
    expected = smap[..., keep].mean()
    got = ssim(x, y, data_range=1.0, mask=mask, window=7)
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)


def test_empty_mask_gives_ssim_one_and_zero_gradient() -> None:
    x, y = (torch.from_numpy(a) for a in _pair(1, 24, 24, 1.0, batch=2))
    x.requires_grad_(True)
    mask = torch.ones(2, 1, 24, 24, dtype=torch.float64)
    mask[1] = 0
    mask[1, :, :5, :5] = 1  # valid pixels, but no whole 11 x 11 window
    value = ssim(x, y, data_range=1.0, mask=mask, reduction="none")
    assert value[1].item() == 1.0
    assert value[0].item() == pytest.approx(ssim(x[:1], y[:1], data_range=1.0).item(), abs=1e-12)
    value.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1].abs().max() == 0 and x.grad[0].abs().max() > 0


def test_tiny_image_shrinks_window() -> None:
    assert fit_window(11, 8, 8) == 7 and fit_window(11, 9, 40) == 9 and fit_window(11, 5, 6) == 5
    assert fit_window(11, 64, 64) == 11
    x, y = (torch.from_numpy(a) for a in _pair(3, 8, 8, 1.0, batch=2))
    expected = ref_ssim(x, y, data_range=1.0, win_size=7, win_sigma=1.5, size_average=False)
    torch.testing.assert_close(ssim(x, y, data_range=1.0, reduction="none"), expected, rtol=0, atol=1e-5)
    # MS-SSIM of a tiny image is a single scale: relu(SSIM) with the shrunk window
    torch.testing.assert_close(ms_ssim(x, y, data_range=1.0, reduction="none"), expected.clamp_min(0), rtol=0,
                               atol=1e-5)
    with pytest.raises(ValueError, match="2x8"):
        ssim(x[..., :2, :], y[..., :2, :], data_range=1.0)


def test_gaussian_window() -> None:
    g = gaussian_window(11, 1.5, torch.float64)
    expected = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(g.numpy(), expected / expected.sum(), rtol=0, atol=1e-15)


def test_modules_equal_functions_and_identical_images_give_zero() -> None:
    x, y = (torch.from_numpy(a).float() for a in _pair(3, 40, 40, 1.0, batch=2))
    mask = torch.ones(2, 1, 40, 40)
    mask[0, :, :, 30:] = 0
    loss = SSIMLoss(window=11, sigma=1.5, data_range=1.0)
    torch.testing.assert_close(loss(x, y, mask), 1 - ssim(x, y, data_range=1.0, mask=mask, reduction="none"))
    ms_loss = MSSSIMLoss(window=5, data_range=1.0)
    torch.testing.assert_close(ms_loss(x, y), 1 - ms_ssim(x, y, data_range=1.0, window=5, reduction="none"))
    # identical images: A1 == B1 and A2 == B2 bit for bit, so exactly 0 (float32)
    assert loss(x, x).abs().max().item() == 0.0
    assert ms_loss(x, x).abs().max().item() == 0.0
    assert loss(x, y).shape == (2,) and (loss(x, y) > 0.01).all()
    with pytest.raises(ConfigError, match="odd"):
        SSIMLoss(window=10)


def test_data_range_is_keyword_only_without_default() -> None:
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(TypeError):
        ssim(x, x)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ssim(x, x, 1.0)  # type: ignore[misc]


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 9, 10, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.rand(2, 2, 9, 10, dtype=torch.float64, generator=gen, requires_grad=True)
    mask = torch.ones(2, 1, 9, 10, dtype=torch.float64)
    mask[0, :, :, 7:] = 0
    assert torch.autograd.gradcheck(lambda a, b: ssim(a, b, data_range=1.0, window=5, reduction="none"), (x, y))
    assert torch.autograd.gradcheck(
        lambda a, b: ssim(a, b, data_range=2.0, window=5, mask=mask, reduction="none"), (x, y), fast_mode=True
    )
    assert torch.autograd.gradcheck(lambda a: ssim(a, y.detach(), data_range=1.0, window=3), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b: ssim_map(a, b, data_range=1.0, window=5), (x, y), fast_mode=True)
    x2 = torch.rand(1, 1, 20, 22, dtype=torch.float64, generator=gen, requires_grad=True)
    y2 = torch.rand(1, 1, 20, 22, dtype=torch.float64, generator=gen, requires_grad=True)
    m2 = torch.ones(1, 1, 20, 22, dtype=torch.float64)
    m2[..., 16:, :] = 0
    # 3 scales with window 5 (20 -> 10 -> 5), masked: exercises the CS path of the backward
    assert ssim_module.msssim_levels(20, 22, 5) == 3
    assert torch.autograd.gradcheck(
        lambda a, b: ms_ssim(a, b, data_range=1.0, window=5, mask=m2, reduction="none"), (x2, y2), fast_mode=True
    )


def test_fused_backward_equals_autograd_of_the_map(monkeypatch: pytest.MonkeyPatch) -> None:
    # float32, several CPU chunks: the hand-written backward vs autograd through ssim_map
    monkeypatch.setattr(ssim_module, "_CPU_CHUNK_PIXELS", 2 * 3 * 48 * 48)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5, 3, 48, 48, generator=gen)
    y = (x + 0.1 * torch.randn(5, 3, 48, 48, generator=gen)).clamp(0, 1)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    fused = ssim(a, y, data_range=1.0, reduction="none")
    plain = ssim_map(b, y, data_range=1.0).mean(dim=(1, 2, 3))
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-6)
    weights = torch.arange(1.0, 6.0)
    (fused * weights).sum().backward()
    (plain * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)


def test_float32_under_bf16_autocast() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 32, 32, generator=gen).bfloat16().float()  # bf16-representable values
    y = torch.rand(2, 1, 32, 32, generator=gen).bfloat16().float()
    expected = ssim(x, y, data_range=1.0, reduction="none")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ssim(x, y, data_range=1.0, reduction="none")
        got_bf16_inputs = ssim(x.bfloat16(), y.bfloat16(), data_range=1.0, reduction="none")
    assert got.dtype == torch.float32 and got_bf16_inputs.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(got_bf16_inputs, expected, rtol=0, atol=0)


def test_float64_blur_over_row_bands_is_bitwise_the_whole_plane_filter() -> None:
    import torch.nn.functional as F

    from diffsr.losses.ssim import _blur_valid

    gen = torch.Generator().manual_seed(0)
    planes = torch.rand(3, 150, 90, generator=gen, dtype=torch.float64)
    g = torch.rand(11, generator=gen, dtype=torch.float64)
    rows = F.conv2d(planes[None], g.view(1, 1, 1, 11).expand(3, 1, 1, 11), groups=3)
    whole = F.conv2d(rows, g.view(1, 1, 11, 1).expand(3, 1, 11, 1), groups=3)[0]
    assert torch.equal(_blur_valid(planes, g), whole)
