"""k-space consistency projects onto the complex measurement the degradation made, not onto its magnitude."""

from __future__ import annotations

import math

import torch

from diffsr.data.degrade import DEGRADATIONS, kspace_measure, kspace_truncate
from diffsr.data.eval_items import load_eval_items
from diffsr.sampling.consistency import Consistency, dps_step, kspace_project


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float((a.double() - b.double()).pow(2).mean()))


def _phantom() -> torch.Tensor:
    """A smooth head-like image with values near 0 (where magnitude and clamping bite)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64, dtype=torch.float64),
                          torch.linspace(-1, 1, 48, dtype=torch.float64), indexing="ij")
    head = ((x / 0.8) ** 2 + (y / 0.9) ** 2 < 1).double()
    return (head * (0.6 + 0.3 * torch.sin(6 * x) * torch.cos(4 * y)))[None, None]


def test_the_true_hr_projected_onto_its_own_measurement_comes_back() -> None:
    hr = _phantom()
    lr, measurement = DEGRADATIONS.build("kspace", scale=2).measure(hr)
    assert measurement is not None and measurement.is_complex()
    assert _psnr(kspace_project(hr, measurement, 2), hr) >= 100
    # the magnitude image is not the measurement: projecting onto it caps the result
    assert _psnr(kspace_project(hr, lr, 2), hr) < 60


def test_the_measurement_is_the_lr_image_before_magnitude_and_clamping() -> None:
    hr = _phantom()
    g = torch.Generator().manual_seed(0)
    lr, measurement = DEGRADATIONS.build("kspace", scale=2, rician=0.01).measure(hr, g)
    torch.testing.assert_close(lr, measurement.abs().clamp(0, 1), rtol=0, atol=0)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(kspace_truncate(hr, 2, 0.01, g), measurement.abs(), rtol=0, atol=0)
    # and the kept frequencies of the measurement are the HR's (noiseless): hand-derived DFT relation
    clean = kspace_measure(hr, 2)
    spec_hr, spec_lr = torch.fft.fft2(hr), torch.fft.fft2(clean)
    # LR frequency (0, 1) is HR frequency (0, 1) times (h w) / (H W)
    assert torch.allclose(spec_lr[..., 0, 1], spec_hr[..., 0, 1] * (32 * 24) / (64 * 48))


def test_consistency_and_guidance_use_the_complex_measurement() -> None:
    hr = _phantom()
    _, measurement = DEGRADATIONS.build("kspace", scale=2).measure(hr)
    blurred = torch.nn.functional.avg_pool2d(hr, 3, 1, 1)
    fixed = Consistency(measurement, 2, "kspace")(blurred)
    # the projection replaces the measured frequencies by the truth's: the error left is outside them
    assert _psnr(fixed, hr) > _psnr(blurred, hr)
    torch.testing.assert_close(kspace_measure(fixed, 2), measurement, rtol=0, atol=1e-10)
    step = dps_step(blurred, measurement, 2, 1.0, "kspace")  # step 1 is the exact projection
    torch.testing.assert_close(step, fixed, rtol=0, atol=1e-9)


def test_eval_items_carry_the_measurement_of_a_simulated_kspace_lr(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    img = (_phantom()[0, 0].numpy() * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    (kspace,) = load_eval_items(tmp_path, 2, degradation="kspace")
    (bicubic,) = load_eval_items(tmp_path, 2, degradation="bicubic")
    assert kspace.measurement is not None and kspace.measurement.is_complex()
    torch.testing.assert_close(kspace.lr, kspace.measurement.abs().to(kspace.lr.dtype).clamp(0, 1))
    assert bicubic.measurement is None
