"""Pixel losses and masked means (hand-derived values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffsr.losses.pixel import (
    CharbonnierLoss,
    L1Loss,
    L2Loss,
    charbonnier_loss,
    l1_loss,
    l2_loss,
    masked_mean,
)
from tests.losses._helpers import _rand


def test_masked_mean_by_hand() -> None:
    x = _rand(2, 3, 4, 5)
    mask = torch.zeros(2, 1, 4, 5, dtype=torch.float64)
    mask[0, 0, 1:3, 2:] = 1  # 2 x 3 valid pixels
    mask[1, 0, 0, 0] = 0.5  # soft weight
    xn = x.numpy()
    expected0 = xn[0, :, 1:3, 2:].mean()
    expected1 = xn[1, :, 0, 0].mean()  # a single pixel with weight 0.5: weighted mean is its value
    got = masked_mean(x, mask)
    np.testing.assert_allclose(got.numpy(), [expected0, expected1], rtol=1e-14)
    np.testing.assert_allclose(masked_mean(x).numpy(), xn.mean(axis=(1, 2, 3)), rtol=1e-14)
    # per-channel mask (B, C, H, W)
    full = torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    full[:, 1] = 1
    np.testing.assert_allclose(masked_mean(x, full).numpy(), xn[:, 1].mean(axis=(1, 2)), rtol=1e-14)


def test_masked_mean_empty_mask_is_zero_with_finite_gradient() -> None:
    x = _rand(2, 1, 3, 3).requires_grad_(True)
    mask = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    mask[1] = 0
    value = masked_mean(x, mask)
    assert value[1].item() == 0.0
    value.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1].abs().max() == 0
    with pytest.raises(ValueError, match=r"\(2, 1, 3, 3\)"):
        masked_mean(x, torch.ones(2, 1, 3, 4))


def test_pixel_losses_by_hand() -> None:
    pred, target = _rand(2, 3, 4, 4, seed=1), _rand(2, 3, 4, 4, seed=2)
    d = (pred - target).numpy()
    np.testing.assert_allclose(l1_loss(pred, target).numpy(), np.abs(d).mean(axis=(1, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(l2_loss(pred, target).numpy(), (d**2).mean(axis=(1, 2, 3)), rtol=1e-14)
    eps = 1e-2
    np.testing.assert_allclose(
        charbonnier_loss(pred, target, eps=eps).numpy(), np.sqrt(d**2 + eps**2).mean(axis=(1, 2, 3)), rtol=1e-14
    )
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    mask[:, :, :2] = 1
    np.testing.assert_allclose(
        l1_loss(pred, target, mask).numpy(), np.abs(d[:, :, :2]).mean(axis=(1, 2, 3)), rtol=1e-14
    )
    # modules == functions
    torch.testing.assert_close(L1Loss()(pred, target, mask), l1_loss(pred, target, mask))
    torch.testing.assert_close(L2Loss()(pred, target, mask), l2_loss(pred, target, mask))
    torch.testing.assert_close(CharbonnierLoss(eps)(pred, target, mask), charbonnier_loss(pred, target, mask, eps))
    # Charbonnier of identical images is eps, with a zero (not NaN) gradient
    p = pred.clone().requires_grad_(True)
    value = charbonnier_loss(p, pred, eps=eps)
    value.sum().backward()
    np.testing.assert_allclose(value.detach().numpy(), [eps, eps], rtol=1e-14)
    assert p.grad.abs().max() == 0
