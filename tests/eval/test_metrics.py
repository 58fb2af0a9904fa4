"""Metrics against independent references: skimage (PSNR, SSIM), the BasicSR / MATLAB Y formula
and BasicSR's calculate_psnr(test_y_channel=True, crop_border=s) written out in numpy."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from diffsr.config import EvalConfig
from diffsr.eval.metrics import (
    Conventions,
    MetricSuite,
    prepare,
    psnr,
    rgb_to_y,
    sharpness_ratio,
    ssim_metric,
)

DATA = Path(__file__).parents[3] / "shared" / "data"


def _pair(shape: tuple[int, ...], data_range: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hr = rng.random(shape) * data_range
    sr = np.clip(hr + 0.05 * data_range * rng.standard_normal(shape), 0, data_range)
    return sr, hr


# ----------------------------------------------------------------------------- PSNR / SSIM parity


@pytest.mark.parametrize("data_range", [1.0, 255.0, 4095.0])
@pytest.mark.parametrize("shape", [(1, 1, 16, 20), (2, 3, 24, 17), (3, 1, 33, 31)])
def test_psnr_matches_skimage(data_range: float, shape: tuple[int, ...]) -> None:
    sr, hr = _pair(shape, data_range)
    got = psnr(torch.from_numpy(sr), torch.from_numpy(hr), data_range=data_range)
    assert got.dtype == torch.float64 and got.shape == (shape[0],)
    for b in range(shape[0]):
        expected = peak_signal_noise_ratio(hr[b], sr[b], data_range=data_range)
        assert got[b].item() == pytest.approx(expected, abs=1e-6)


def test_psnr_is_per_image_not_pooled() -> None:
    # image 0 is much worse than image 1: per-image values must differ
    hr = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    sr = hr.clone()
    sr[0] += 0.1
    sr[1] += 0.01
    got = psnr(sr, hr, data_range=1.0)
    assert got.tolist() == pytest.approx([20.0, 40.0], abs=1e-9)  # 10 log10(1 / 0.01), 10 log10(1 / 1e-4)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_matches_skimage(channels: int, data_range: float) -> None:
    sr, hr = _pair((2, channels, 40, 36), data_range, seed=1)
    got = ssim_metric(torch.from_numpy(sr), torch.from_numpy(hr), data_range=data_range)
    assert got.shape == (2,)
    for b in range(2):
        expected = structural_similarity(
            hr[b],
            sr[b],
            data_range=data_range,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        # float64 both sides; skimage averages the interior (5 px border for window 11)
        assert got[b].item() == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------- Y channel and crop


def test_rgb_to_y_matches_basicsr_formula() -> None:
    white = torch.ones(1, 3, 2, 2, dtype=torch.float64)
    black = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 2, 2), 235 / 255, dtype=torch.float64))
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 2, 2), 16 / 255, dtype=torch.float64))
    red = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    assert rgb_to_y(red).item() == pytest.approx((65.481 + 16) / 255, abs=1e-12)
    blue = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).view(1, 3, 1, 1)
    assert rgb_to_y(blue).item() == pytest.approx((24.966 + 16) / 255, abs=1e-12)
    rng = np.random.default_rng(2)
    img = rng.random((5, 7, 3))  # HWC RGB in [0, 1]
    # BasicSR rgb2ycbcr(img, y_only=True) on float input: (img @ [65.481, 128.553, 24.966] + 16) / 255
    expected = (np.dot(img, [65.481, 128.553, 24.966]) + 16.0) / 255.0
    got = rgb_to_y(torch.from_numpy(img).permute(2, 0, 1)[None])[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_crop_border_removes_scale_pixels_each_side(scale: int) -> None:
    conv = Conventions.from_config(EvalConfig(), scale)
    assert conv.crop_border == scale
    hr = torch.arange(20 * 24, dtype=torch.float64).view(1, 1, 20, 24) / (20 * 24)
    sr_c, hr_c = prepare(hr.clone(), hr, conv)
    assert hr_c.shape == (1, 1, 20 - 2 * scale, 24 - 2 * scale)
    assert hr_c[0, 0, 0, 0].item() == hr[0, 0, scale, scale].item()
    assert hr_c[0, 0, -1, -1].item() == hr[0, 0, 20 - scale - 1, 24 - scale - 1].item()
    assert torch.equal(sr_c, hr_c)


def test_from_config_keeps_explicit_values() -> None:
    conv = Conventions.from_config(EvalConfig(crop_border=0, quantize=True, lpips_net="vgg", data_range=2.0), 4)
    assert (conv.crop_border, conv.quantize_bits, conv.lpips_net, conv.data_range) == (0, 8, "vgg", 2.0)
    assert conv.sharpness_cutoff == pytest.approx(0.125)
    d = conv.to_dict()
    assert d["crop_border"] == 0 and "y_formula" in d and "sharpness" in d


def _basicsr_psnr_y(img: np.ndarray, img2: np.ndarray, crop_border: int) -> float:
    """BasicSR calculate_psnr(img, img2, crop_border, test_y_channel=True) on HWC [0, 255] images.

    BasicSR works on BGR (cv2) arrays: to_y_channel = bgr2ycbcr(img / 255, y_only=True) * 255 with
    bgr2ycbcr's weights [24.966, 128.553, 65.481]; we hand it our RGB images flipped to BGR.
    """
    img, img2 = img[..., ::-1], img2[..., ::-1]  # RGB -> BGR
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]

    def to_y_channel(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64) / 255.0
        y = (np.dot(x, [24.966, 128.553, 65.481]) + 16.0) / 255.0
        return y[..., None] * 255.0

    img, img2 = to_y_channel(img), to_y_channel(img2)
    mse = np.mean((img - img2) ** 2)
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


@pytest.mark.parametrize("scale", [2, 4])
def test_psnr_y_crop_matches_basicsr_by_hand(scale: int) -> None:
    rng = np.random.default_rng(3)
    hr8 = rng.integers(0, 256, size=(2, 32, 28, 3)).astype(np.float64)
    sr8 = np.clip(hr8 + rng.integers(-20, 21, size=hr8.shape), 0, 255).astype(np.float64)
    conv = Conventions.from_config(EvalConfig(), scale)  # Y, crop = scale, data range 1
    to_t = lambda a: torch.from_numpy(a / 255.0).permute(0, 3, 1, 2)  # noqa: E731
    sr_y, hr_y = prepare(to_t(sr8), to_t(hr8), conv)
    got = psnr(sr_y, hr_y, data_range=conv.data_range)
    for b in range(2):
        assert got[b].item() == pytest.approx(_basicsr_psnr_y(sr8[b], hr8[b], scale), abs=1e-6)
    # RGB PSNR is a different number (the pitfall the conventions exist for)
    rgb = Conventions(crop_border=scale, y_channel=False)
    got_rgb = psnr(*prepare(to_t(sr8), to_t(hr8), rgb), data_range=1.0)
    assert abs(got_rgb[0].item() - got[0].item()) > 0.5


def test_quantize_rounds_to_8_bit_before_metrics() -> None:
    rng = np.random.default_rng(4)
    hr = rng.random((1, 1, 16, 16))
    sr = np.clip(hr + 0.01 * rng.standard_normal(hr.shape), 0, 1)
    conv = Conventions(crop_border=0, quantize_bits=8)
    got = psnr(*prepare(torch.from_numpy(sr), torch.from_numpy(hr), conv), data_range=1.0).item()
    expected = peak_signal_noise_ratio(np.round(hr * 255) / 255, np.round(sr * 255) / 255, data_range=1.0)
    assert got == pytest.approx(expected, abs=1e-6)


def test_prepare_clamps_sr_to_data_range() -> None:
    hr = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)
    sr = hr.clone()
    sr[..., 0, 0] = 1.7  # overshoot, as bicubic can
    sr_c, _ = prepare(sr, hr, Conventions(crop_border=0))
    assert sr_c.max().item() == 1.0


def test_prepare_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape of hr"):
        prepare(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9), Conventions())


# ----------------------------------------------------------------------------- sharpness


def _smooth_image(seed: int = 5, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((size, size)), 1.0)
    return (img - img.min()) / (img.max() - img.min())


def test_sharpness_identical_is_one() -> None:
    hr = torch.from_numpy(_smooth_image())[None, None]
    assert sharpness_ratio(hr.clone(), hr).item() == pytest.approx(1.0, abs=1e-12)


def test_sharpness_blur_below_one_and_noise_above_one() -> None:
    img = _smooth_image()
    hr = torch.from_numpy(img)[None, None]
    blurred = torch.from_numpy(gaussian_filter(img, 1.5))[None, None]
    noisy = hr + 0.1 * torch.from_numpy(np.random.default_rng(6).standard_normal(img.shape))[None, None]
    assert sharpness_ratio(blurred, hr, cutoff=0.25).item() < 0.5
    assert sharpness_ratio(noisy, hr, cutoff=0.25).item() > 1.2
    more_blur = torch.from_numpy(gaussian_filter(img, 3.0))[None, None]
    assert sharpness_ratio(more_blur, hr, cutoff=0.25) < sharpness_ratio(blurred, hr, cutoff=0.25)


def test_sharpness_of_bicubic_x4_on_real_images_is_well_below_one() -> None:
    folder = DATA / "natural" / "set5"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    from PIL import Image

    values = []
    for path in sorted(folder.glob("*.png")):
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
        h, w = (arr.shape[0] // 4) * 4, (arr.shape[1] // 4) * 4
        hr = torch.from_numpy(arr[:h, :w]).float().permute(2, 0, 1)[None]
        lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True)
        sr = F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
        conv = Conventions.from_config(EvalConfig(), 4)
        values.append(sharpness_ratio(*prepare(sr, hr, conv), cutoff=conv.sharpness_cutoff).item())
    # DESIGN.md section 6: bicubic about 0.3-0.6 of the HR high-frequency energy
    assert all(0.15 < v < 0.7 for v in values), values


# ----------------------------------------------------------------------------- suite


def test_suite_values_match_the_functions() -> None:
    sr, hr = _pair((2, 3, 32, 32), 1.0, seed=7)
    sr_t, hr_t = torch.from_numpy(sr), torch.from_numpy(hr)
    conv = Conventions(crop_border=2)
    suite = MetricSuite(conv, lpips=False)
    out = suite(sr_t, hr_t)
    assert list(out) == ["psnr", "ssim", "nrmse", "nmse", "hfen", "sharpness"] == suite.names
    y_sr = (np.einsum("bchw,c->bhw", sr[:, :, 2:-2, 2:-2], [65.481, 128.553, 24.966]) + 16) / 255
    y_hr = (np.einsum("bchw,c->bhw", hr[:, :, 2:-2, 2:-2], [65.481, 128.553, 24.966]) + 16) / 255
    for b in range(2):
        assert out["psnr"][b] == pytest.approx(peak_signal_noise_ratio(y_hr[b], y_sr[b], data_range=1.0), abs=1e-6)
        # skimage's euclidean NRMSE is ||HR - SR|| / ||HR||: the suite's nrmse, and nmse its square
        ref = normalized_root_mse(y_hr[b], y_sr[b], normalization="euclidean")
        assert out["nrmse"][b] == pytest.approx(ref, rel=1e-5)
        assert out["nmse"][b] == pytest.approx(ref**2, rel=1e-5)


class _RecordingLPIPS(torch.nn.Module):
    seen: list[torch.Tensor] = []

    def __init__(self, net: str, weights: str | None, backbone_weights: str | None) -> None:
        super().__init__()
        self.net = net

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        type(self).seen = [pred, target]
        return (pred - target).abs().mean(dim=(1, 2, 3))


def test_lpips_gets_cropped_three_channel_unit_range_input(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("diffsr.losses.perceptual")
    fake.LPIPSLoss = _RecordingLPIPS  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "diffsr.losses.perceptual", fake)
    sr, hr = _pair((2, 1, 24, 24), 255.0, seed=8)
    suite = MetricSuite(Conventions(crop_border=3, data_range=255.0), lpips=True)
    out = suite(torch.from_numpy(sr), torch.from_numpy(hr))
    pred, target = _RecordingLPIPS.seen
    assert pred.shape == target.shape == (2, 3, 18, 18)  # gray replicated, border cropped
    assert float(target.max()) <= 1.0 and float(target.min()) >= 0.0  # [0, 1] in; the loss maps to [-1, 1]
    expected = np.abs(sr - hr)[:, :, 3:-3, 3:-3].mean(axis=(1, 2, 3)) / 255.0
    np.testing.assert_allclose(out["lpips"], expected, rtol=1e-5)


def test_lpips_missing_weights_is_a_note_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffsr.core.errors import ConfigError

    def missing(*args: object, **kwargs: object) -> None:
        raise ConfigError("lpips weights 'x.pth' not found")

    fake = types.ModuleType("diffsr.losses.perceptual")
    fake.LPIPSLoss = missing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "diffsr.losses.perceptual", fake)
    suite = MetricSuite(Conventions(), lpips=True)
    assert "lpips" not in suite.names
    assert any("LPIPS skipped" in n and "x.pth" in n for n in suite.notes)


def test_ms_ssim_matches_pytorch_msssim() -> None:
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    sr, hr = _pair((2, 1, 176, 168), 1.0, seed=9)
    sr = gaussian_filter(sr, (0, 0, 1.0, 1.0))  # correlated errors: cs stays positive at every scale
    suite = MetricSuite(Conventions(crop_border=0), lpips=False, ms_ssim=True)
    got = suite(torch.from_numpy(sr), torch.from_numpy(hr))["ms_ssim"]
    # Wang et al.'s weights sum to 1.0001; diffsr.losses.ssim.ms_ssim renormalises them to 1, which
    # moves the value by ~2e-5 here: pass pytorch_msssim the renormalised weights for float64 parity
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    center = np.arange(11) - 5.0
    window = np.exp(-(center**2) / (2 * 1.5**2))
    window = torch.from_numpy(window / window.sum()).view(1, 1, 1, 11)  # float64 (the default is float32)
    expected = pytorch_msssim.ms_ssim(
        torch.from_numpy(sr),
        torch.from_numpy(hr),
        data_range=1.0,
        size_average=False,
        win=window,
        weights=list(weights / weights.sum()),
    )
    np.testing.assert_allclose(got, expected.double().numpy(), atol=1e-9)
    small = MetricSuite(Conventions(crop_border=0), lpips=False, ms_ssim=True)
    out = small(torch.from_numpy(sr[..., :64, :64]), torch.from_numpy(hr[..., :64, :64]))
    assert np.isnan(out["ms_ssim"]).all() and any("MS-SSIM skipped" in n for n in small.notes)


def test_lpips_matches_the_lpips_package(tmp_path: Path) -> None:
    """Real LPIPSLoss through the suite vs the lpips package, both on one random AlexNet backbone
    (no download: the pretrained backbone is not needed to check the plumbing: crop, gray -> RGB,
    [0, 1] -> [-1, 1])."""
    lpips = pytest.importorskip("lpips")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet()
    torch.save(alexnet.state_dict(), tmp_path / "alexnet.pth")
    conv = Conventions(crop_border=2, lpips_backbone_weights=str(tmp_path / "alexnet.pth"))
    suite = MetricSuite(conv, lpips=True)
    if "lpips" not in suite.names:
        pytest.skip(f"LPIPS linear weights unavailable: {suite.notes}")
    sr, hr = _pair((2, 1, 48, 48), 1.0, seed=10)
    got = suite(torch.from_numpy(sr), torch.from_numpy(hr))["lpips"]

    reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    convs = [m for m in reference.net.modules() if isinstance(m, torch.nn.Conv2d)]
    for mine, theirs in zip([m for m in alexnet.features if isinstance(m, torch.nn.Conv2d)], convs, strict=True):
        theirs.load_state_dict(mine.state_dict())
    x = torch.from_numpy(sr[..., 2:-2, 2:-2]).float().expand(-1, 3, -1, -1)
    y = torch.from_numpy(hr[..., 2:-2, 2:-2]).float().expand(-1, 3, -1, -1)
    with torch.no_grad():
        expected = reference(x * 2 - 1, y * 2 - 1).flatten().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)  # float32 networks on both sides
