"""The wavelet codec: round trips, documented channel orders (against PyWavelets), side
information, statelessness, padding, the all_learnable layout, gradients, bad arguments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffsr.codecs import Latent, WaveletCodec, pad_to
from tests.codecs._helpers import rand_images

pywt = pytest.importorskip("pywt")
pytestmark = pytest.mark.filterwarnings("ignore:Level value of .* is too high")

LOSSLESS = ["ll", "full", "all"]


def expected_channels(layout: str, c: int, levels: int) -> int:
    # written out per layout (DESIGN section 4), not taken from the codec
    return {"ll": c, "full": 4 * c, "all": 4**levels * c, "all_learnable": c + 3 * c * levels}[layout]


def pywt_coeffs(x: np.ndarray, wavelet: str, levels: int) -> list:
    """pywt.wavedec2 of 2x - 1 for one (H, W) image."""
    return pywt.wavedec2(2 * x - 1, wavelet, mode="periodization", level=levels)


# ----------------------------------------------------------------------------- wavelet round trips


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("wavelet", ["haar", "db2"])
@pytest.mark.parametrize("layout", LOSSLESS)
def test_lossless_round_trip_and_shapes(layout: str, wavelet: str, levels: int, channels: int) -> None:
    codec = WaveletCodec(wavelet, levels, layout, channels=channels)
    x = rand_images(2, channels, 16, 24)
    latent = codec.encode(x)
    f = 2**levels
    assert latent.z.shape == (2, expected_channels(layout, channels, levels), 16 // f, 24 // f)
    assert codec.latent_channels(channels) == latent.z.shape[1]
    assert codec.downsample == f and codec.is_lossless and not codec.is_learned
    torch.testing.assert_close(codec.decode(latent), x, atol=1e-5, rtol=0)
    with pytest.raises(StopIteration):  # parameter-free: nothing to probe, nothing to train
        next(codec.parameters())


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_round_trip_float64(wavelet: str) -> None:
    codec = WaveletCodec(wavelet, 3, "all", channels=2)
    x = rand_images(1, 2, 16, 8, dtype=torch.float64)
    y = codec.decode(codec.encode(x))
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- channel orders vs pywt


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_all_layout_channel_order_matches_docs(wavelet: str) -> None:
    """z = [LL_2 / 4, (cH, cV, cD)_2 band-major, pixel_unshuffle((cH, cV, cD)_1, 2)]."""
    c, h, w = 3, 16, 8
    x = rand_images(2, c, h, w, dtype=torch.float64)
    z = WaveletCodec(wavelet, 2, "all", channels=c).encode(x).z.numpy()
    assert z.shape == (2, 16 * c, h // 4, w // 4)
    for b in range(2):
        for ch in range(c):
            ll2, highs2, highs1 = pywt_coeffs(x[b, ch].numpy(), wavelet, 2)
            np.testing.assert_allclose(z[b, ch], ll2 / 4, atol=1e-12)
            for band in range(3):
                np.testing.assert_allclose(z[b, c + band * c + ch], highs2[band], atol=1e-12)
                for dy in range(2):
                    for dx in range(2):
                        k = 4 * c + (band * c + ch) * 4 + dy * 2 + dx
                        np.testing.assert_allclose(z[b, k], highs1[band][dy::2, dx::2], atol=1e-12)


def test_full_and_ll_layouts_match_pywt() -> None:
    c = 2
    x = rand_images(1, c, 16, 16, dtype=torch.float64)
    full = WaveletCodec("db2", 3, "full", channels=c).encode(x)
    ll = WaveletCodec("db2", 3, "ll", channels=c).encode(x)
    assert sorted(full.side) == ["highs1", "highs2"] and sorted(ll.side) == ["highs1", "highs2", "highs3"]
    for ch in range(c):
        ll3, highs3, highs2, highs1 = pywt_coeffs(x[0, ch].numpy(), "db2", 3)
        np.testing.assert_allclose(full.z[0, ch].numpy(), ll3 / 8, atol=1e-12)
        np.testing.assert_allclose(ll.z[0, ch].numpy(), ll3 / 8, atol=1e-12)
        for band in range(3):
            np.testing.assert_allclose(full.z[0, c + band * c + ch].numpy(), highs3[band], atol=1e-12)
            np.testing.assert_allclose(ll.side["highs3"][0, band, ch].numpy(), highs3[band], atol=1e-12)
            np.testing.assert_allclose(full.side["highs2"][0, band, ch].numpy(), highs2[band], atol=1e-12)
            np.testing.assert_allclose(full.side["highs1"][0, band, ch].numpy(), highs1[band], atol=1e-12)


# ----------------------------------------------------------------------------- side information


@pytest.mark.parametrize("layout", ["ll", "full"])
def test_decode_uses_the_side_it_is_given(layout: str) -> None:
    """A prediction decoded with the condition's side: LL (or LL + level-L bands) from z,
    finer bands from the condition, checked with pywt.waverec2."""
    codec = WaveletCodec("haar", 2, layout, channels=1)
    hr = rand_images(1, 1, 16, 16, seed=1, dtype=torch.float64)
    cond = rand_images(1, 1, 16, 16, seed=2, dtype=torch.float64)
    zc = codec.encode(cond)
    got = codec.decode(zc.with_z(codec.encode(hr).z))[0, 0].numpy()
    hr_c = pywt_coeffs(hr[0, 0].numpy(), "haar", 2)
    cond_c = pywt_coeffs(cond[0, 0].numpy(), "haar", 2)
    mixed = [hr_c[0], hr_c[1] if layout == "full" else cond_c[1], cond_c[2]]
    expected = (pywt.waverec2(mixed, "haar", mode="periodization") + 1) / 2
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("layout", LOSSLESS)
def test_two_batches_in_flight(layout: str) -> None:
    # a codec caching the last batch's bands in self would decode the first batch wrongly
    codec = WaveletCodec("db2", 2, layout, channels=1)
    x1, x2 = rand_images(2, 1, 16, 16, seed=1), rand_images(3, 1, 16, 16, seed=2)
    lat1, lat2 = codec.encode(x1), codec.encode(x2)
    torch.testing.assert_close(codec.decode(lat2), x2, atol=1e-5, rtol=0)
    torch.testing.assert_close(codec.decode(lat1), x1, atol=1e-5, rtol=0)
    # Latent.select keeps z and side rows together
    torch.testing.assert_close(codec.decode(lat2.select(torch.tensor([2, 0]))), x2[[2, 0]], atol=1e-5, rtol=0)


def test_ll_without_side_is_a_clear_error() -> None:
    codec = WaveletCodec("haar", 2, "ll", channels=1)
    z = codec.encode(rand_images(1, 1, 8, 8)).z
    with pytest.raises(ValueError, match="side\\['highs1'\\]"):
        codec.decode(Latent(z))


# ----------------------------------------------------------------------------- sizes and padding


@pytest.mark.parametrize("layout", ["ll", "all", "all_learnable"])
def test_size_not_multiple_raises_with_size(layout: str) -> None:
    codec = WaveletCodec("haar", 3, layout, channels=1)
    with pytest.raises(ValueError, match="20x16"):
        codec.encode(torch.rand(1, 1, 20, 16))  # 20 is not a multiple of 8


def test_pad_to_and_mask() -> None:
    codec = WaveletCodec("db2", 2, "all", channels=3)
    x = rand_images(2, 3, 13, 22)
    padded, mask = pad_to(x, codec.downsample)
    assert padded.shape == (2, 3, 16, 24) and mask.shape == (2, 1, 16, 24)
    assert mask[:, :, :13, :22].eq(1).all() and mask.sum().item() == 2 * 13 * 22
    torch.testing.assert_close(padded[:, :, :13, :22], x)
    y = codec.decode(codec.encode(padded))
    torch.testing.assert_close(y[:, :, :13, :22], x, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- all_learnable


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("levels", [2, 3])
def test_all_learnable_shapes_and_gradients(levels: int, channels: int) -> None:
    codec = WaveletCodec("haar", levels, "all_learnable", channels=channels)
    assert codec.is_learned and not codec.is_lossless
    x = rand_images(2, channels, 16, 16)
    latent = codec.encode(x)
    f = 2**levels
    assert latent.z.shape == (2, channels + 3 * channels * levels, 16 // f, 16 // f)
    assert latent.side == {}
    y = codec.decode(latent)
    assert y.shape == x.shape
    ((y - x) ** 2).sum().backward()
    params = list(codec.named_parameters())
    assert len(params) == 2 * (levels - 1)
    for name, p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_all_learnable_initial_round_trip_is_block_average_of_fine_bands() -> None:
    """At initialisation level-1 bands come back as their 2x2 block means (average pool then
    nearest upsampling); LL_2 and level-2 bands are exact. Reference built with numpy + pywt."""
    x = rand_images(1, 1, 16, 16, dtype=torch.float64)
    codec = WaveletCodec("haar", 2, "all_learnable", channels=1).double()
    got = codec.decode(codec.encode(x))[0, 0].detach().numpy()
    ll2, highs2, highs1 = pywt_coeffs(x[0, 0].numpy(), "haar", 2)

    def block_mean(a: np.ndarray) -> np.ndarray:
        m = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))
        return np.repeat(np.repeat(m, 2, axis=0), 2, axis=1)

    smooth = tuple(block_mean(band) for band in highs1)
    expected = (pywt.waverec2([ll2, highs2, smooth], "haar", mode="periodization") + 1) / 2
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_all_learnable_level_1_has_nothing_to_learn() -> None:
    codec = WaveletCodec("haar", 1, "all_learnable", channels=1)
    assert not codec.is_learned and codec.is_lossless
    x = rand_images(1, 1, 8, 8)
    torch.testing.assert_close(codec.decode(codec.encode(x)), x, atol=1e-5, rtol=0)


def test_all_learnable_channel_mismatch() -> None:
    codec = WaveletCodec("haar", 2, "all_learnable", channels=3)
    with pytest.raises(ValueError, match="3 channel"):
        codec.encode(torch.rand(1, 1, 8, 8))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("layout", "wavelet"),
    [("ll", "haar"), ("full", "db2"), ("all", "haar"), ("all", "db2"), ("all_learnable", "haar")],
)
def test_codec_gradcheck(layout: str, wavelet: str) -> None:
    codec = WaveletCodec(wavelet, 2, layout, channels=1).double()
    x = rand_images(1, 1, 8, 8, dtype=torch.float64).requires_grad_(True)
    side = codec.encode(x.detach()).side

    def round_trip(t: torch.Tensor) -> torch.Tensor:
        return codec.decode(Latent(codec.encode(t).z, side))

    assert torch.autograd.gradcheck(round_trip, (x,), fast_mode=True)
    z = codec.encode(x.detach()).z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: codec.decode(Latent(t, side)), (z,), fast_mode=True)


def test_bad_codec_arguments() -> None:
    with pytest.raises(ValueError, match="layout"):
        WaveletCodec(layout="lh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="levels"):
        WaveletCodec(levels=4)
    with pytest.raises(ValueError, match="wavelet"):
        WaveletCodec(wavelet="sym5")
    with pytest.raises(ValueError, match="latents"):
        WaveletCodec(levels=1, layout="all").decode(Latent(torch.rand(1, 3, 4, 4)))
