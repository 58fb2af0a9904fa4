"""Uncertainty maps: calibration statistics on synthetic data with known answers, and the
``--samples`` path of sr_files writing mean + std maps for 8/16-bit PNG and NIfTI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import special, stats

from diffsr.sampling.uncertainty import (
    CalibrationAccumulator,
    calibrate,
    calibration,
    error_vs_std_curve,
    plot_error_vs_std,
    sample_mean_std,
    std_error_correlation,
)

C = math.sqrt(2 / math.pi)  # E|z| for z ~ N(0, 1)


def _heteroscedastic(n: int = 200_000, lo: float = 0.01, hi: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(lo, hi, n)
    err = np.abs(sigma * rng.standard_normal(n))
    return sigma, err


def test_correlation_matches_numpy_scipy_and_the_analytic_value() -> None:
    lo, hi = 0.01, 0.1
    sigma, err = _heteroscedastic(lo=lo, hi=hi)
    assert std_error_correlation(sigma, err) == pytest.approx(np.corrcoef(sigma, err)[0, 1], abs=1e-12)
    rho = stats.spearmanr(sigma, err).statistic
    assert std_error_correlation(sigma, err, method="spearman") == pytest.approx(rho, abs=1e-12)
    # sigma ~ U(lo, hi), |e| = sigma |z|: cov = c var(sigma), var|e| = E sigma^2 - c^2 (E sigma)^2
    mean, var = (lo + hi) / 2, (hi - lo) ** 2 / 12
    analytic = C * math.sqrt(var) / math.sqrt(var + mean**2 - C**2 * mean**2)
    # standard error of a correlation from 2e5 pixels is about 0.002
    assert std_error_correlation(sigma, err) == pytest.approx(analytic, abs=0.01)
    # an error independent of the std: no correlation
    shuffled = np.random.default_rng(1).permutation(err)
    assert abs(std_error_correlation(sigma, shuffled)) < 0.01


def test_spearman_handles_ties_like_scipy() -> None:
    rng = np.random.default_rng(2)
    std = rng.integers(0, 5, 1000).astype(float)  # many ties, e.g. a zero background
    err = rng.integers(0, 3, 1000).astype(float) + std
    rho = stats.spearmanr(std, err).statistic
    assert std_error_correlation(std, err, method="spearman") == pytest.approx(rho, abs=1e-12)


def test_mask_excludes_pixels() -> None:
    sigma, err = _heteroscedastic(10_000)
    std_img = torch.from_numpy(sigma.reshape(1, 1, 100, 100))
    err_img = err.reshape(1, 1, 100, 100).copy()
    mask = np.ones((1, 1, 100, 100))
    mask[..., :10, :] = 0
    err_img[..., :10, :] = 1e6  # garbage where the mask is 0
    got = std_error_correlation(std_img, err_img, mask=mask)
    expected = np.corrcoef(sigma.reshape(100, 100)[10:].ravel(), err.reshape(100, 100)[10:].ravel())[0, 1]
    assert got == pytest.approx(expected, abs=1e-12)


def test_error_vs_std_curve_follows_the_half_normal_line() -> None:
    sigma, err = _heteroscedastic()
    curve = error_vs_std_curve(sigma, err, bins=10)
    assert len(curve.count) == 10 and sum(curve.count) == sigma.size
    assert max(curve.count) - min(curve.count) <= 1  # equal-count bins
    ms, me = np.array(curve.mean_std), np.array(curve.mean_abs_error)
    assert np.all(np.diff(ms) > 0)
    # E|e| = sqrt(2/pi) sigma and RMS = sigma per bin; 2e4 pixels per bin: ~0.5 % standard error
    np.testing.assert_allclose(me, C * ms, rtol=0.03)
    np.testing.assert_allclose(curve.rms_error, np.sqrt(np.array(curve.mean_std) ** 2), rtol=0.03)
    # bin means straight from numpy for one bin
    edges = np.quantile(sigma, np.linspace(0, 1, 11))
    first = (sigma >= edges[0]) & (sigma < edges[1])
    assert curve.mean_std[0] == pytest.approx(sigma[first].mean(), rel=1e-12)
    uniform = error_vs_std_curve(sigma, err, bins=5, strategy="uniform")
    np.testing.assert_allclose(uniform.edges, np.linspace(sigma.min(), sigma.max(), 6))


def _c4(n: int) -> float:
    """E[s] / sigma for the sample std of n normal draws."""
    return math.sqrt(2 / (n - 1)) * math.exp(special.gammaln(n / 2) - special.gammaln((n - 1) / 2))


@pytest.mark.parametrize("n", [4, 16])
def test_a_calibrated_posterior_is_reported_calibrated(n: int) -> None:
    # the truth and the N samples are draws from the same per-pixel Gaussian posterior
    rng = np.random.default_rng(3)
    shape = (4, 1, 128, 128)
    mu = rng.random(shape)
    sigma = 0.01 + 0.09 * rng.random(shape)
    hr = mu + sigma * rng.standard_normal(shape)
    samples = mu + sigma * rng.standard_normal((n, *shape))
    report = calibration(torch.from_numpy(samples), hr)
    assert report.n_samples == n and report.pixels == hr.size
    # E|hr - mean| = c sigma sqrt(1 + 1/N), E[std] = c4(N) sigma: the ratio is 1 / c4(N)
    assert report.ratio == pytest.approx(1 / _c4(n), rel=0.02)
    # (hr - mean) / (s sqrt(1 + 1/N)) ~ t_{N-1}: a prediction interval
    for k in (1, 2):
        expected = stats.t.cdf(k, n - 1) - stats.t.cdf(-k, n - 1)
        assert report.coverage[str(k)] == pytest.approx(expected, abs=0.01)
    assert report.pearson > 0.2
    # an over-confident map (std halved) doubles the ratio
    mean, std = sample_mean_std(samples)
    assert calibrate(mean, std / 2, hr, n_samples=n).ratio == pytest.approx(2 * report.ratio, rel=1e-9)


def test_accumulator_pools_images_and_crops_borders() -> None:
    rng = np.random.default_rng(4)
    means = [rng.random((1, 1, 20, 20)) for _ in range(3)]
    stds = [rng.random((1, 1, 20, 20)) for _ in range(3)]
    hrs = [rng.random((1, 1, 20, 20)) for _ in range(3)]
    acc = CalibrationAccumulator(crop_border=2)
    for m, s, h in zip(means, stds, hrs, strict=True):
        acc.add(m, s, h)
    pooled = acc.result()
    s_all = np.concatenate([s[..., 2:-2, 2:-2].ravel() for s in stds])
    e_all = np.concatenate([np.abs(m - h)[..., 2:-2, 2:-2].ravel() for m, h in zip(means, hrs, strict=True)])
    assert pooled.pixels == 3 * 16 * 16
    assert pooled.pearson == pytest.approx(np.corrcoef(s_all, e_all)[0, 1], abs=1e-6)
    assert pooled.mean_abs_error == pytest.approx(e_all.mean(), rel=1e-6)
    with pytest.raises(ValueError, match="no images"):
        CalibrationAccumulator().result()


def test_plot_writes_a_png(tmp_path: Path) -> None:
    sigma, err = _heteroscedastic(5000)
    path = plot_error_vs_std({"a": error_vs_std_curve(sigma, err), "b": error_vs_std_curve(sigma, err / 2)},
                             tmp_path / "fig" / "err_std.png", n_samples=8, title="t")
    img = Image.open(path)
    assert img.format == "PNG" and img.size[0] > 100


# ----------------------------------------------------------------------------- sr_files --samples


def _loaded(channels: int = 1):
    from diffsr.config import load_config
    from diffsr.model import build_model
    from diffsr.sampling.infer import LoadedModel

    cfg = load_config("demo", ["net.width=16", "net.channel_mult=[1,2]", f"data.channels={channels}",
                               "data.scale=2", "codec={name: pixel}",
                               "process={name: resshift, steps: 3, kappa: 1.0, min_noise: 0.2}",
                               "sample.steps=2", "sample.seed=5"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.net.out_conv.weight.normal_(0, 0.05)
    return LoadedModel(model, cfg, checkpoint=Path("none"), step=0, ema=False)


def _draws(loaded, unit: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: n separate super_resolve calls with seeds seed + k, numpy statistics."""
    from diffsr.sampling.infer import super_resolve

    lr = torch.from_numpy(unit.astype(np.float32))
    draws = np.stack([super_resolve(loaded, lr, seed=loaded.config.sample.seed + k).numpy() for k in range(n)])
    return draws.mean(0), draws.std(0, ddof=1)


@pytest.mark.parametrize("bits", [8, 16])
def test_sr_files_samples_png(tmp_path: Path, bits: int) -> None:
    from diffsr.sampling.infer import sr_files

    loaded = _loaded()
    rng = np.random.default_rng(5)
    top = 2**bits - 1
    arr = (rng.random((12, 10)) * top).astype(np.uint8 if bits == 8 else np.uint16)
    src = tmp_path / "in" / "img.png"
    src.parent.mkdir()
    Image.fromarray(arr).save(src)
    written = sr_files(loaded, [src], tmp_path / "out", samples=4)
    assert [p.name for p in written] == ["img_sr.png", "img_sr_std.png"]
    # auto normalization: 8-bit -> the type's range 0..255; 16-bit -> the data's own min..max
    lo, hi = (0.0, float(top)) if bits == 8 else (float(arr.min()), float(arr.max()))
    mean_ref, std_ref = _draws(loaded, (arr[None, None] - lo) / (hi - lo), 4)
    sr = np.asarray(Image.open(written[0]))
    std = np.asarray(Image.open(written[1]))
    assert sr.shape == std.shape == (24, 20) and std.dtype == sr.dtype == arr.dtype
    assert float(std_ref.max()) * (hi - lo) > 2  # the map is not trivially zero
    # one grey level for rounding (and float32 summation order)
    assert np.abs(sr.astype(float) - np.round(lo + mean_ref[0, 0] * (hi - lo))).max() <= 1
    assert np.abs(std.astype(float) - np.round(std_ref[0, 0] * (hi - lo))).max() <= 1
    # samples=1 writes no std map
    assert [p.name for p in sr_files(loaded, [src], tmp_path / "out1")] == ["img_sr.png"]


def test_sr_files_samples_nifti(tmp_path: Path) -> None:
    import nibabel as nib

    from diffsr.sampling.infer import sr_files

    loaded = _loaded()
    rng = np.random.default_rng(6)
    vol = (1000 + 3000 * rng.random((12, 10, 3))).astype(np.float32)  # (x, y, slices), arbitrary units
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(src))
    written = sr_files(loaded, [src], tmp_path / "out", samples=3)
    assert [p.name for p in written] == ["vol_sr.nii.gz", "vol_sr_std.nii.gz"]
    sr_img, std_img = nib.load(str(written[0])), nib.load(str(written[1]))
    assert sr_img.shape == std_img.shape == (24, 20, 3)
    np.testing.assert_allclose(std_img.affine, sr_img.affine)
    np.testing.assert_allclose(np.abs(np.diag(std_img.affine))[:3], [0.4, 0.45, 2.5])
    # reference: percentile mapping of the non-zero voxels (the NIfTI default), per-slice draws
    lo, hi = np.percentile(vol[vol != 0], [0.5, 99.5])
    unit = np.clip((vol - lo) / (hi - lo), 0, 1)
    std_file = std_img.get_fdata()
    for k in range(3):
        _, std_ref = _draws(loaded, unit[None, None, :, :, k], 3)
        # float32 file, std in the volume's units (no offset): std_unit * (hi - lo)
        np.testing.assert_allclose(std_file[:, :, k], std_ref[0, 0] * (hi - lo), rtol=1e-4, atol=1e-3 * (hi - lo))
