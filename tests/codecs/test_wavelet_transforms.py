"""The functional wavelet transforms against PyWavelets (mode="periodization").

Tolerances: float64 1e-10 (both sides do the same few multiply-adds; observed ~1e-15),
float32 1e-5 (inputs in [-1, 1], <= 3 levels of sums with magnitudes up to ~8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffsr.codecs.wavelet import (
    _dwt2,
    _idwt2,
    _poly_forward,
    _poly_inverse,
    dwt2,
    filters,
    idwt2,
    wavedec2,
    waverec2,
)

pywt = pytest.importorskip("pywt")

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
pytestmark = pytest.mark.filterwarnings("ignore:Level value of .* is too high")


def images(batch: int, channels: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, channels, h, w))


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_filters_match_pywt(wavelet: str) -> None:
    lo, hi = filters(wavelet)
    ref = pywt.Wavelet(wavelet)
    np.testing.assert_allclose(lo, ref.dec_lo, atol=1e-15)
    np.testing.assert_allclose(hi, ref.dec_hi, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_wavedec2_matches_pywt(wavelet: str, levels: int, channels: int, dtype: torch.dtype) -> None:
    x = images(2, channels, 16, 24)  # non-square, multiple of 2**3
    coeffs = wavedec2(torch.from_numpy(x).to(dtype), wavelet, levels)
    assert len(coeffs) == levels + 1
    assert all(c.dtype == dtype for c in coeffs)
    for b in range(2):
        for c in range(channels):
            ref = pywt.wavedec2(x[b, c], wavelet, mode="periodization", level=levels)
            np.testing.assert_allclose(coeffs[0][b, c].double().numpy(), ref[0], atol=TOL[dtype], rtol=0)
            for i in range(1, levels + 1):
                assert coeffs[i].shape == (2, 3, channels, *ref[i][0].shape)
                for band in range(3):  # (cH, cV, cD)
                    np.testing.assert_allclose(
                        coeffs[i][b, band, c].double().numpy(), ref[i][band], atol=TOL[dtype], rtol=0
                    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_waverec2_matches_pywt_on_random_coefficients(wavelet: str, levels: int, dtype: torch.dtype) -> None:
    # arbitrary coefficients (not the output of a forward pass), so the inverse is tested alone
    rng = np.random.default_rng(1)
    b, c, h, w = 2, 3, 32, 16
    ours = [torch.from_numpy(rng.uniform(-1, 1, (b, c, h >> levels, w >> levels))).to(dtype)]
    for level in range(levels, 0, -1):
        ours.append(torch.from_numpy(rng.uniform(-1, 1, (b, 3, c, h >> level, w >> level))).to(dtype))
    got = waverec2(ours, wavelet).double().numpy()
    assert got.shape == (b, c, h, w)
    for i in range(b):
        for j in range(c):
            ref_coeffs = [ours[0][i, j].double().numpy()] + [
                tuple(hs[i, band, j].double().numpy() for band in range(3)) for hs in ours[1:]
            ]
            ref = pywt.waverec2(ref_coeffs, wavelet, mode="periodization")
            np.testing.assert_allclose(got[i, j], ref, atol=TOL[dtype] * 10, rtol=0)


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_dwt2_single_level_matches_pywt_and_inverts(wavelet: str) -> None:
    x = images(1, 2, 8, 12)
    ll, highs = dwt2(torch.from_numpy(x), wavelet)
    for c in range(2):
        ref_ll, ref_highs = pywt.dwt2(x[0, c], wavelet, mode="periodization")
        np.testing.assert_allclose(ll[0, c].numpy(), ref_ll, atol=1e-12)
        for band in range(3):
            np.testing.assert_allclose(highs[0, band, c].numpy(), ref_highs[band], atol=1e-12)
    np.testing.assert_allclose(idwt2(ll, highs, wavelet).numpy(), x, atol=1e-12)


def test_haar_butterfly_formula_by_hand() -> None:
    # one 2x2 block [[a, b], [c, d]]: the closed form of the module docstring
    a, b, c, d = 1.0, 2.0, 4.0, 8.0
    ll, highs = dwt2(torch.tensor([[[[a, b], [c, d]]]], dtype=torch.float64))
    assert ll.item() == pytest.approx((a + b + c + d) / 2)
    assert highs[0, :, 0, 0, 0].tolist() == pytest.approx(
        [(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2]
    )


def test_polyphase_path_reproduces_haar_fast_path() -> None:
    # the generic convolution / polyphase code with the Haar filter against the butterfly
    x = torch.from_numpy(images(2, 3, 8, 6))
    ll, highs = dwt2(x, "haar")
    packed = _poly_forward(x, "haar")
    ll_p, highs_p = packed[:, 0], packed[:, 1:]
    torch.testing.assert_close(ll_p, ll, atol=1e-12, rtol=0)
    torch.testing.assert_close(highs_p, highs, atol=1e-12, rtol=0)
    torch.testing.assert_close(_poly_inverse(ll, highs, "haar"), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_gradcheck_dwt2_idwt2(wavelet: str) -> None:
    x = torch.rand(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dwt2(t, wavelet), (x,), fast_mode=True)
    ll = torch.rand(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    highs = torch.rand(1, 3, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: idwt2(a, b, wavelet), (ll, highs), fast_mode=True)
    # and the full Jacobian once, on the smallest input
    tiny = torch.rand(1, 1, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dwt2(t, wavelet), (tiny,))


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_gradcheck_multilevel(wavelet: str) -> None:
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    # fast_mode: random projections of the Jacobians instead of one backward per output
    assert torch.autograd.gradcheck(lambda t: tuple(wavedec2(t, wavelet, 2)), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: waverec2(wavedec2(t, wavelet, 2), wavelet) ** 2, (x,), fast_mode=True)


@pytest.mark.parametrize("scale", [0.5, 2.0])
@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_scaled_kernels(wavelet: str, scale: float) -> None:
    """The codec folds its 2x - 1 / (y + 1) / 2 factors into the transforms: check the scaled
    forward / inverse against pywt times the scale, and their gradients (adjoint = scaled inverse)."""
    x = images(1, 2, 8, 4)
    ll, highs = _dwt2(torch.from_numpy(x), wavelet, scale)
    for c in range(2):
        ref_ll, ref_highs = pywt.dwt2(x[0, c], wavelet, mode="periodization")
        np.testing.assert_allclose(ll[0, c].numpy(), scale * ref_ll, atol=1e-12)
        for band in range(3):
            np.testing.assert_allclose(highs[0, band, c].numpy(), scale * ref_highs[band], atol=1e-12)
    y = _idwt2(ll, highs, wavelet, scale)
    np.testing.assert_allclose(y.numpy(), scale**2 * x, atol=1e-12)
    t = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: _dwt2(u, wavelet, scale), (t,))
    lo = torch.rand(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    hi = torch.rand(1, 3, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _idwt2(a, b, wavelet, scale), (lo, hi))


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_double_backward(wavelet: str) -> None:
    # the custom autograd functions call each other in backward, so second order works
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: dwt2(t, wavelet)[1] ** 2, (x,))
    ll = torch.rand(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    highs = torch.rand(1, 3, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: idwt2(a, b, wavelet) ** 2, (ll, highs))


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_size_not_multiple_names_the_size(wavelet: str) -> None:
    with pytest.raises(ValueError, match="10x12"):
        wavedec2(torch.rand(1, 1, 10, 12), wavelet, 2)  # 10 is not a multiple of 4
    with pytest.raises(ValueError, match="7x8"):
        dwt2(torch.rand(1, 1, 7, 8), wavelet)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown 'db9'"):
        dwt2(torch.rand(1, 1, 4, 4), "db9")
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        dwt2(torch.rand(4, 4))
    with pytest.raises(ValueError, match="highs"):
        idwt2(torch.rand(1, 2, 2, 2), torch.rand(1, 2, 3, 2, 2))


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 16 * 8 * 8, 3 * 16 * 16 * 8 * 2])
def test_batch_chunking_matches_pywt(monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    # on CPU Haar runs over chunks: force row blocks of 4 and 8 rows, and 2 images per chunk
    import diffsr.codecs.wavelet as wavelet_module

    monkeypatch.setattr(wavelet_module, "_CHUNK_BYTES", chunk_bytes)
    x = images(5, 3, 16, 16)
    t = torch.from_numpy(x).requires_grad_(True)
    coeffs = wavedec2(t, "haar", 2)
    for b in range(5):
        for c in range(3):
            ref = pywt.wavedec2(x[b, c], "haar", mode="periodization", level=2)
            np.testing.assert_allclose(coeffs[0][b, c].detach().numpy(), ref[0], atol=1e-12)
            for band in range(3):
                np.testing.assert_allclose(coeffs[2][b, band, c].detach().numpy(), ref[2][band], atol=1e-12)
    y = waverec2(coeffs, "haar")
    np.testing.assert_allclose(y.detach().numpy(), x, atol=1e-12)
    (grad,) = torch.autograd.grad((y * torch.arange(16.0, dtype=y.dtype)).sum(), t)
    # round trip is the identity, so the gradient is the weight itself
    torch.testing.assert_close(grad, torch.arange(16.0, dtype=y.dtype).expand_as(grad))


def test_non_contiguous_input() -> None:
    x = torch.from_numpy(images(2, 3, 8, 8)).transpose(-1, -2)  # a strided view
    ref = wavedec2(x.contiguous(), "haar", 2)
    for got, want in zip(wavedec2(x, "haar", 2), ref, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
