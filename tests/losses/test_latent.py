"""Latent-space terms: the image mask pooled onto the latent grid."""

from __future__ import annotations

import pytest
import torch

from diffsr.losses import (
    LatentL1Loss,
)
from tests.losses._helpers import DT


def test_latent_l1_with_image_mask() -> None:
    z0_hat = torch.zeros(1, 2, 2, 2, dtype=DT)
    z0 = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[2.0, 4.0], [6.0, 8.0]]]], dtype=DT)
    mask = torch.zeros(1, 1, 4, 4, dtype=DT)
    mask[..., :, :2] = 1  # left half of the image -> left latent column
    got = LatentL1Loss()(z0_hat, z0, mask)
    assert got.tolist() == pytest.approx([(1 + 5 + 2 + 6) / 4])
