"""Each degradation's defining property, against numpy / scipy references or closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.fft import dctn

from diffsr.config import DegradationConfig
from diffsr.core.errors import ConfigError
from diffsr.data.degrade import (
    DEGRADATIONS,
    add_gaussian_noise,
    add_poisson_noise,
    bicubic_down,
    build_degradation,
    column_stripes,
    gain_nonuniformity,
    gaussian_blur,
    infrared_degrade,
    kspace_keep_slices,
    kspace_truncate,
    kspace_upsample,
    realesrgan_degrade,
    reduce_contrast,
    upsample,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- k-space


@pytest.mark.parametrize(("size", "scale"), [((32, 32), 4), ((48, 40), 2), ((36, 24), 3)])
def test_kspace_keeps_centre_frequencies_and_zeroes_the_rest(size: tuple[int, int], scale: int) -> None:
    h, w = size
    hr = torch.rand(2, 1, h, w, generator=gen(1), dtype=torch.float64)
    lr = kspace_truncate(hr, scale, magnitude=False)
    assert lr.shape == (2, 1, h // scale, w // scale)
    up = kspace_upsample(lr, scale)
    f_up = np.fft.fft2(up.numpy())
    f_hr = np.fft.fft2(hr.numpy())
    ky = np.abs(np.fft.fftfreq(h) * h)[:, None]
    kx = np.abs(np.fft.fftfreq(w) * w)[None, :]
    kept = (ky <= (h // scale - 1) // 2) & (kx <= (w // scale - 1) // 2)
    # float64 FFTs: differences are round-off, relative to the DC term (~h w / 2)
    np.testing.assert_allclose(f_up[..., kept], f_hr[..., kept], atol=1e-5)
    np.testing.assert_allclose(f_up[..., ~kept], 0, atol=1e-5)
    rows, cols = kspace_keep_slices(h, w, scale)  # the same set in the centred spectrum
    centred = np.zeros((h, w), bool)
    centred[rows, cols] = True
    np.testing.assert_array_equal(centred, np.fft.fftshift(kept))
    # the LR holds the same mean (DC scaled by the grid size)
    np.testing.assert_allclose(lr.mean(dim=(-2, -1)), hr.mean(dim=(-2, -1)), atol=1e-12)


def test_kspace_magnitude_keeps_a_positive_band_limited_image() -> None:
    yy, xx = torch.meshgrid(*(torch.arange(32, dtype=torch.float64),) * 2, indexing="ij")
    img = 0.5 + 0.2 * torch.cos(2 * math.pi * 2 * xx / 32) + 0.1 * torch.sin(2 * math.pi * 3 * yy / 32)
    hr = img[None, None]
    lr = kspace_truncate(hr, 4)  # default: magnitude; frequencies 2 and 3 are within |k| <= 3
    np.testing.assert_allclose(kspace_upsample(lr, 4).numpy(), hr.numpy(), atol=1e-10)


def test_kspace_rician_noise_on_zero_background() -> None:
    hr = torch.zeros(1, 1, 256, 256, dtype=torch.float64)
    sigma = 0.05
    lr = kspace_truncate(hr, 2, rician=sigma, generator=gen(2))
    # the magnitude of complex N(0, s^2) noise is Rayleigh: mean s sqrt(pi / 2)
    assert lr.mean().item() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)


# ----------------------------------------------------------------------------- resizing


def test_bicubic_down_of_constant_is_constant() -> None:
    hr = torch.full((2, 3, 40, 24), 0.37, dtype=torch.float64)
    lr = bicubic_down(hr, 4)
    assert lr.shape == (2, 3, 10, 6)
    np.testing.assert_allclose(lr.numpy(), 0.37, atol=1e-12)


def test_bicubic_down_is_antialiased() -> None:
    # a period-2 checkerboard (energy only at Nyquist) must average out, not alias
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    hr = ((yy + xx) % 2).double()[None, None]
    lr = bicubic_down(hr, 4)
    np.testing.assert_allclose(lr[..., 2:-2, 2:-2].numpy(), 0.5, atol=0.02)


def test_upsample_shape_range_and_constant() -> None:
    lr = torch.rand(2, 1, 8, 6, generator=gen(3))
    up = upsample(lr, 4)
    assert up.shape == (2, 1, 32, 24) and up.min() >= 0 and up.max() <= 1
    np.testing.assert_allclose(upsample(torch.full((1, 1, 8, 8), 0.6), 2).numpy(), 0.6, atol=1e-6)
    # bicubic overshoots on a step edge; clamp=False keeps it
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    assert upsample(step, 4, clamp=False).max() > 1.0


# ----------------------------------------------------------------------------- blur and noise


@pytest.mark.parametrize("sigma", [0.8, 1.5, 2.6])
def test_gaussian_blur_matches_scipy(sigma: float) -> None:
    x = torch.rand(1, 1, 30, 26, generator=gen(4), dtype=torch.float64)
    # our radius is ceil(3 sigma); scipy's is int(truncate sigma + 0.5): choose truncate to match
    radius = math.ceil(3 * sigma)
    truncate = (radius - 0.25) / sigma
    for padding, mode in (("reflect", "mirror"), ("circular", "wrap")):
        ours = gaussian_blur(x, sigma, padding=padding)[0, 0].numpy()
        ref = ndimage.gaussian_filter(x[0, 0].numpy(), sigma, mode=mode, truncate=truncate)
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_gaussian_blur_preserves_the_mean_and_per_sample_sigma() -> None:
    x = torch.rand(3, 2, 32, 32, generator=gen(5), dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    y = gaussian_blur(x, sigma, padding="circular")
    np.testing.assert_allclose(y.mean(dim=(-2, -1)).numpy(), x.mean(dim=(-2, -1)).numpy(), atol=1e-12)
    for i in range(3):  # per-sample sigma == separate calls with a common radius
        single = gaussian_blur(x[i : i + 1], float(sigma[i]), padding="circular", radius=6)
        np.testing.assert_allclose(y[i : i + 1].numpy(), single.numpy(), atol=1e-12)


def test_gaussian_noise_std_matches_sigma() -> None:
    x = torch.full((2, 1, 256, 256), 0.5, dtype=torch.float64)
    y = add_gaussian_noise(x, torch.tensor([0.05, 0.01]), gen(6))
    noise = (y - x).numpy()
    assert noise[0].std() == pytest.approx(0.05, rel=0.02)
    assert noise[1].std() == pytest.approx(0.01, rel=0.02)
    assert abs(noise.mean()) < 1e-3


def test_poisson_noise_mean_and_variance() -> None:
    x = torch.full((1, 1, 256, 256), 0.3, dtype=torch.float64)
    peak = 100.0
    y = add_poisson_noise(x, peak, gen(7)).numpy()
    assert y.mean() == pytest.approx(0.3, rel=0.01)
    assert y.var() == pytest.approx(0.3 / peak, rel=0.05)  # Var[Poisson(l) / p] = l / p^2 = x / p


# ----------------------------------------------------------------------------- infrared


def test_column_stripes_are_constant_along_columns() -> None:
    x = torch.rand(2, 1, 64, 128, generator=gen(8), dtype=torch.float64)
    added = column_stripes(x, 0.03, gen(9)) - x
    np.testing.assert_allclose(added.std(dim=-2).numpy(), 0, atol=1e-12)  # constant down each column
    assert added[:, :, 0].std().item() == pytest.approx(0.03, rel=0.2)  # varies across columns


def test_nonuniformity_is_low_frequency() -> None:
    x = torch.full((4, 1, 64, 64), 0.5, dtype=torch.float64)
    y = gain_nonuniformity(x, 0.1, gen(10))
    gain = (y / x - 1).numpy()
    np.testing.assert_allclose(np.abs(gain).max(axis=(-2, -1)), 0.1, atol=1e-12)  # amplitude
    # DCT-II (even extension: no wrap-around edge): >= 99 % of the energy in the lowest 6 x 6
    # coefficients (below 3 cycles per image); white noise puts ~1 % there
    energy = dctn(gain, axes=(-2, -1), norm="ortho") ** 2
    low = energy[..., :6, :6].sum(axis=(-2, -1)) / energy.sum(axis=(-2, -1))
    assert (low > 0.99).all()


def test_contrast_reduces_std_by_the_factor() -> None:
    x = torch.rand(2, 3, 32, 32, generator=gen(11), dtype=torch.float64)
    y = reduce_contrast(x, torch.tensor([0.7, 0.9]))
    ratio = y.std(dim=(-2, -1)) / x.std(dim=(-2, -1))
    np.testing.assert_allclose(ratio[0].numpy(), 0.7, atol=1e-12)
    np.testing.assert_allclose(ratio[1].numpy(), 0.9, atol=1e-12)
    np.testing.assert_allclose(y.mean(dim=(-2, -1)).numpy(), x.mean(dim=(-2, -1)).numpy(), atol=1e-12)


def test_infrared_degrade_without_effects_is_bicubic() -> None:
    hr = torch.rand(2, 1, 32, 32, generator=gen(12), dtype=torch.float64)
    np.testing.assert_allclose(infrared_degrade(hr, 4, generator=gen(0)).numpy(), bicubic_down(hr, 4).numpy())


# ----------------------------------------------------------------------------- Degradation objects


#: each degradation's own parameters (a key another degradation uses is an error)
PARAMS = {
    "bicubic": {},
    "blur_noise": {"poisson": 0.5, "noise_sigma": (0.01, 0.03)},
    "realesrgan": {"poisson": 0.5, "noise_sigma": (0.01, 0.03)},
    "kspace": {"rician": 0.02},
    "infrared": {"noise_sigma": (0.01, 0.03)},
}


@pytest.mark.parametrize("name", list(PARAMS))
def test_degradation_seeded_shape_and_range(name: str) -> None:
    cfg = DegradationConfig(name=name, **PARAMS[name])
    deg = build_degradation(cfg, 4)
    hr = torch.rand(3, 1, 32, 48, generator=gen(13))
    a, b, c = deg(hr, gen(1)), deg(hr, gen(1)), deg(hr, gen(2))
    assert a.shape == (3, 1, 8, 12) and a.dtype == hr.dtype
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    if name != "bicubic":
        assert (a - c).abs().max() > 1e-3
    # the degradation keeps the image: LR stays close to bicubic LR on average
    assert (a.mean() - bicubic_down(hr, 4).mean()).abs() < 0.05


def test_realesrgan_is_reproducible_per_sample() -> None:
    hr = torch.rand(2, 3, 32, 32, generator=gen(14))
    a = realesrgan_degrade(hr, 2, generator=gen(3))
    b = realesrgan_degrade(hr, 2, generator=gen(3))
    assert a.shape == (2, 3, 16, 16)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_registry_and_config_errors() -> None:
    assert set(DEGRADATIONS.names()) == {"bicubic", "blur_noise", "realesrgan", "kspace", "infrared", "slice_profile"}
    with pytest.raises(ConfigError, match="blur_sigma"):
        build_degradation(DegradationConfig(name="blur_noise", blur_sigma=(2.0, 1.0)), 2)
    deg = build_degradation(None, 3)
    assert deg.name == "bicubic" and deg.upsample(torch.zeros(1, 1, 4, 4)).shape == (1, 1, 12, 12)
    belongs = r"unknown key 'rician' for degradation 'blur_noise' \(rician belongs to 'kspace'\)"
    with pytest.raises(ConfigError, match=belongs):
        DegradationConfig(name="blur_noise", rician=0.02)
