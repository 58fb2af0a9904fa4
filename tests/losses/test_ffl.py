"""Focal frequency loss: parity with the official package, fp32 under autocast, detached weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from focal_frequency_loss import FocalFrequencyLoss as OfficialFFL

from diffsr.losses.frequency import FocalFrequencyLoss, focal_frequency_loss


def _images(batch: int = 3, channels: int = 2, h: int = 16, w: int = 12, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(batch, channels, h, w, generator=gen, dtype=dtype)
    pred = (target + 0.2 * torch.randn(batch, channels, h, w, generator=gen, dtype=dtype)).clamp(0, 1)
    return pred, target


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("log_matrix", [False, True])
@pytest.mark.parametrize("batch_matrix", [False, True])
def test_matches_official_package(alpha: float, log_matrix: bool, batch_matrix: bool) -> None:
    pred, target = _images()
    official = OfficialFFL(
        loss_weight=1.0, alpha=alpha, patch_factor=1, ave_spectrum=False, log_matrix=log_matrix,
        batch_matrix=batch_matrix,
    )
    ours = focal_frequency_loss(pred, target, alpha=alpha, log_matrix=log_matrix, batch_matrix=batch_matrix)
    assert ours.shape == (3,) and ours.dtype == torch.float64
    # the official loss is the batch mean of the per-sample values
    assert ours.mean().item() == pytest.approx(official(pred, target).item(), rel=1e-12, abs=1e-15)
    if not batch_matrix:  # per-image normalisation: each sample alone gives its own value
        for b in range(3):
            expected = official(pred[b : b + 1], target[b : b + 1]).item()
            assert ours[b].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    module = FocalFrequencyLoss(alpha=alpha, log_matrix=log_matrix, batch_matrix=batch_matrix)
    torch.testing.assert_close(module(pred, target), ours)


def test_float32_under_bf16_autocast() -> None:
    pred, target = _images(dtype=torch.float32)
    pred, target = pred.bfloat16().float(), target.bfloat16().float()  # bf16-representable
    expected = focal_frequency_loss(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = focal_frequency_loss(pred, target)
        got_bf16 = focal_frequency_loss(pred.bfloat16(), target.bfloat16())
    assert expected.dtype == got.dtype == got_bf16.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(got_bf16, expected, rtol=0, atol=0)


def test_weight_is_detached_gradient_is_analytic() -> None:
    # loss_b = mean(w * |F(p - t)|^2) with w constant: d loss_b / d p = 2 / N * Re(F^H(w * F(p - t)))
    pred, target = _images(batch=2, channels=1, h=8, w=10)
    pred.requires_grad_(True)
    focal_frequency_loss(pred, target, alpha=1.0).sum().backward()
    p, t = pred.detach().numpy(), target.numpy()
    spectrum = np.fft.fft2(p - t, norm="ortho")
    w = np.abs(spectrum)
    w = w / w.max(axis=(-2, -1), keepdims=True)
    n = p[0].size
    expected = 2.0 / n * np.real(np.fft.ifft2(w * spectrum, norm="ortho"))
    np.testing.assert_allclose(pred.grad.numpy(), expected, rtol=1e-10, atol=1e-13)


def test_mask_multiplies_both_images() -> None:
    pred, target = _images()
    mask = torch.ones(3, 1, 16, 12, dtype=torch.float64)
    mask[:, :, 10:] = 0
    got = focal_frequency_loss(pred, target, mask=mask)
    torch.testing.assert_close(got, focal_frequency_loss(pred * mask, target * mask))
    assert not torch.allclose(got, focal_frequency_loss(pred, target))


def test_identical_images_give_zero_without_nan() -> None:
    pred, _ = _images()
    pred.requires_grad_(True)
    loss = focal_frequency_loss(pred, pred.detach())
    loss.sum().backward()
    assert loss.abs().max().item() == 0.0 and torch.isfinite(pred.grad).all()
