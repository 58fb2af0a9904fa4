"""NMSE / NRMSE (fastMRI) and HFEN (Ravishankar & Bresler 2011) against hand formulas and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from diffsr.eval.metrics import Conventions, MetricSuite, hfen, log_kernel, nmse, nrmse


def _matlab_log(size: int = 15, sigma: float = 1.5) -> np.ndarray:
    """fspecial('log', size, sigma), written from MATLAB's documented formula."""
    r = (size - 1) // 2
    x, y = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1))
    s2 = sigma**2
    h = np.exp(-(x * x + y * y) / (2 * s2))
    h[h < np.finfo(float).eps * h.max()] = 0
    h /= h.sum()
    h1 = h * (x * x + y * y - 2 * s2) / s2**2
    return h1 - h1.sum() / size**2


def test_log_kernel_is_matlabs_fspecial_log() -> None:
    np.testing.assert_allclose(log_kernel(15, 1.5).numpy(), _matlab_log(15, 1.5), rtol=0, atol=1e-15)
    assert abs(float(log_kernel().sum())) < 1e-14  # zero-sum: a constant image has no HFEN energy


def test_hfen_matches_scipy_with_symmetric_borders() -> None:
    rng = np.random.default_rng(0)
    hr = rng.random((2, 1, 40, 37))
    sr = hr + 0.05 * rng.standard_normal(hr.shape)
    h = _matlab_log()
    # scipy's 'reflect' (d c b a | a b c d) is MATLAB's 'symmetric'; correlate == imfilter
    expected = [np.linalg.norm(ndimage.correlate(sr[i, 0], h, mode="reflect")
                               - ndimage.correlate(hr[i, 0], h, mode="reflect"))
                / np.linalg.norm(ndimage.correlate(hr[i, 0], h, mode="reflect")) for i in range(2)]
    got = hfen(torch.from_numpy(sr), torch.from_numpy(hr)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert hfen(torch.from_numpy(hr), torch.from_numpy(hr)).abs().max() == 0


def test_nmse_and_nrmse_are_fastmri_definitions() -> None:
    rng = np.random.default_rng(1)
    hr = rng.random((3, 1, 16, 20))
    sr = hr + 0.1 * rng.standard_normal(hr.shape)
    expected = [np.linalg.norm(sr[i] - hr[i]) ** 2 / np.linalg.norm(hr[i]) ** 2 for i in range(3)]
    np.testing.assert_allclose(nmse(torch.from_numpy(sr), torch.from_numpy(hr)).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(nrmse(torch.from_numpy(sr), torch.from_numpy(hr)).numpy(), np.sqrt(expected),
                               rtol=1e-12)
    # scale-free: multiplying both by 1000 (MRI units) changes nothing
    assert nmse(torch.from_numpy(sr * 1000), torch.from_numpy(hr * 1000)).numpy() == pytest.approx(expected)


def test_the_metric_suite_reports_them_with_their_conventions() -> None:
    conv = Conventions(crop_border=2)
    suite = MetricSuite(conv, lpips=False)
    assert {"nrmse", "nmse", "hfen"} <= set(suite.names)
    hr = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    sr = (hr + 0.02).clamp(0, 1)
    values = suite(sr, hr)
    inner_sr, inner_hr = sr[..., 2:-2, 2:-2].double(), hr[..., 2:-2, 2:-2].double()
    assert values["nmse"][0] == pytest.approx(float(nmse(inner_sr, inner_hr)[0]))
    assert "hfen" in conv.to_dict() and "fspecial('log', 15, 1.5)" in conv.to_dict()["hfen"]


@pytest.mark.parametrize("shape", [(1, 1, 150, 96), (1, 3, 131, 200), (2, 1, 99, 97), (1, 3, 131, 97)])
def test_log_filter_over_row_bands_is_bitwise_the_whole_image_convolution(shape: tuple[int, ...]) -> None:
    from diffsr.eval.metrics import _symmetric_pad, log_filter, log_kernel

    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b, c, h, w = shape
    planes = _symmetric_pad(x.reshape(b * c, 1, h, w), 7)
    whole = torch.nn.functional.conv2d(planes, log_kernel(15, 1.5)[None, None]).reshape(shape)
    assert torch.equal(log_filter(x), whole)


def test_suite_hfen_reuses_the_hr_log_per_image_and_never_mixes_images() -> None:
    from diffsr.eval.metrics import prepare

    gen = torch.Generator().manual_seed(0)
    suite = MetricSuite(Conventions(crop_border=2), lpips=False)
    hr_a, hr_b = torch.rand(1, 1, 40, 48, generator=gen), torch.rand(1, 1, 40, 48, generator=gen)
    sr1, sr2 = torch.rand(1, 1, 40, 48, generator=gen), torch.rand(1, 1, 40, 48, generator=gen)
    calls = [(sr1, hr_a), (sr2, hr_a), (sr1, hr_b)]
    got = [suite(sr, hr)["hfen"][0] for sr, hr in calls]
    expected = [float(hfen(*prepare(sr, hr, suite.conv))[0]) for sr, hr in calls]  # each from scratch
    assert got == expected
    hr_a.add_(0.1)  # modified in place: the cached LoG is stale
    assert suite(sr1, hr_a)["hfen"][0] == float(hfen(*prepare(sr1, hr_a, suite.conv))[0])
