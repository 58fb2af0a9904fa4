"""Sobel, Laplacian, the edge mask, edge and flat losses (hand-derived values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffsr.losses.edges import EdgeLoss, FlatLoss, edge_loss, edge_mask, flat_loss, laplacian, sobel, sobel_xy
from tests.losses._helpers import _rand


def _step(width: int = 24, height: int = 16, at: int = 12, low: float = 0.2, high: float = 0.8) -> torch.Tensor:
    img = torch.full((1, 1, height, width), low, dtype=torch.float64)
    img[..., at:] = high
    return img


def test_sobel_on_ramp_and_step() -> None:
    # normalised Sobel: a ramp of slope s has magnitude s (interior); replicate border on rows
    ramp = (0.03 * torch.arange(16, dtype=torch.float64)).expand(1, 1, 8, 16).clone()
    gx, gy = sobel_xy(ramp)
    np.testing.assert_allclose(gx[..., 1:-1].numpy(), 0.03, rtol=1e-12)
    np.testing.assert_allclose(gy.numpy(), 0.0, atol=1e-15)
    np.testing.assert_allclose(sobel(ramp)[..., 1:-1].numpy(), 0.03, rtol=1e-9)
    # step of height 0.6 between columns 11 and 12: gx = 0.6 / 2 on both, 0 elsewhere
    mag = sobel(_step())
    np.testing.assert_allclose(mag[..., 11:13].numpy(), 0.3, rtol=1e-9)
    assert mag[..., :11].max() < 1e-5 and mag[..., 13:].max() < 1e-5
    # Laplacian of the step: +0.6 left of it, -0.6 right of it
    lap = laplacian(_step())
    np.testing.assert_allclose(lap[..., 11].numpy(), 0.6, rtol=1e-12)
    np.testing.assert_allclose(lap[..., 12].numpy(), -0.6, rtol=1e-12)


def test_edge_mask_on_step_edge() -> None:
    mask = edge_mask(_step().expand(2, 3, 16, 24), threshold=0.1)
    assert mask.shape == (2, 1, 16, 24) and mask.dtype == torch.float64
    expected = torch.zeros(16, 24, dtype=torch.float64)
    expected[:, 11:13] = 1
    assert torch.equal(mask[0, 0], expected) and torch.equal(mask[1, 0], expected)
    assert edge_mask(_step(), threshold=0.31).sum() == 0  # 0.3 is below it
    assert not edge_mask(_step().requires_grad_(True), 0.1).requires_grad


def _blur_columns(img: torch.Tensor) -> torch.Tensor:
    padded = torch.nn.functional.pad(img, (1, 1, 0, 0), mode="replicate")
    return (padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]) / 3


def test_edge_loss_zero_for_identical_positive_for_blur() -> None:
    target = _step()
    assert edge_loss(target, target, threshold=0.1).item() == 0.0
    blurred = _blur_columns(target)
    value = edge_loss(blurred, target, threshold=0.1)
    # by hand at the two edge columns (11, 12): blurred values ... 0.2, 0.4, 0.6, 0.8 at columns 10..13;
    # target gx = 0.3 at both; blurred gx = (0.6 - 0.2) / 2 = 0.2 at 11 and (0.8 - 0.4) / 2 = 0.2 at 12
    assert value.item() == pytest.approx(0.1, abs=1e-12)
    torch.testing.assert_close(EdgeLoss(0.1)(blurred, target), value)
    # a mask removing the edge columns leaves no edge pixel: 0
    mask = torch.ones_like(target)
    mask[..., 10:14] = 0
    assert edge_loss(blurred, target, threshold=0.1, mask=mask).item() == 0.0


def test_flat_loss_penalises_noise_in_flat_regions_only() -> None:
    target = _step()
    assert flat_loss(target, target, threshold=0.1).item() == pytest.approx(0.0, abs=1e-15)
    noise = 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    flat_region = torch.ones_like(target)
    flat_region[..., 9:15] = 0  # edge columns 11, 12 dilated by one pixel, plus the Laplacian's reach
    noisy_flat = target + noise * flat_region
    assert flat_loss(noisy_flat, target, threshold=0.1).item() > 0.05
    # noise only on the edge columns (inside the dilated edge mask 10..13) is ignored
    on_edges = torch.zeros_like(target)
    on_edges[..., 11:13] = 1
    assert flat_loss(target + noise * on_edges, target, threshold=0.1).item() == pytest.approx(0.0, abs=1e-15)
    # value by hand: mean |Laplacian| over the pixels outside columns 10..13
    pred = noisy_flat
    lap = laplacian(pred).abs()
    keep = torch.ones(24, dtype=torch.bool)
    keep[10:14] = False
    expected = lap[..., keep].mean()
    assert flat_loss(pred, target, threshold=0.1).item() == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(FlatLoss(0.1)(pred, target), flat_loss(pred, target, threshold=0.1))


def test_edge_and_flat_losses_are_differentiable() -> None:
    target = _step().expand(2, 1, 16, 24).clone()
    pred = (target + 0.05 * _rand(2, 1, 16, 24)).requires_grad_(True)
    (edge_loss(pred, target, threshold=0.1) + flat_loss(pred, target, threshold=0.1)).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
