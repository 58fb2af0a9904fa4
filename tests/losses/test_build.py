"""build_loss_stack from a LossesConfig: latent terms, real pixel terms sharing one decode, codec needs."""

from __future__ import annotations

import pytest
import torch

from diffsr.config import LossesConfig
from diffsr.core.errors import ConfigError
from diffsr.losses import (
    build_loss_stack,
)
from tests.losses._helpers import CountingDecode, batch


def test_build_latent_terms_from_config() -> None:
    cfg = LossesConfig(
        diffusion_weight=0.5,
        terms=[
            {"name": "latent_l1", "weight": {"kind": "ramp", "value": 1.0, "warmup": 0, "ramp_end": 10},
             "gate": {"kind": "linear", "t_max": 0.5}, "paired_only": False},
            {"name": "latent_l2", "label": "l2z"},
        ],
        decode_chunk=3,
        nonfinite={"policy": "skip_step", "max_consecutive": 4},
    )
    stack = build_loss_stack(cfg, channels=1)
    assert stack.keys == ["latent_l1", "l2z"] and not stack.needs_decoder
    assert stack.decode_chunk == 3 and stack.nonfinite_policy == "skip_step" and stack.max_consecutive == 4
    assert stack.diffusion_weight == 0.5
    assert not stack.terms[0].paired_only and stack.terms[1].paired_only
    assert stack.terms[0].weight(5) == pytest.approx(0.5)
    assert stack.terms[0].gate(torch.tensor([0.25])).tolist() == [0.5]


def test_build_real_pixel_terms_share_one_decode() -> None:
    """With the real term modules (skipped until they exist): one decode for all of them."""
    names = []
    for module, term in (("pixel", {"name": "l2"}), ("ssim", {"name": "ssim", "window": 7}),
                         ("frequency", {"name": "ffl"}), ("edges", {"name": "edge"})):
        try:
            __import__(f"diffsr.losses.{module}")
        except ImportError:
            continue
        names.append(term)
    if not names:
        pytest.skip("no real pixel-space term modules yet")
    stack = build_loss_stack(LossesConfig(terms=names), channels=1)
    d = batch(b=3, size=16)
    decode = CountingDecode()
    total, report = stack(z0_hat=d["z0_hat"], t=torch.zeros(3), step=0, decode=decode, hr=d["hr"])
    assert decode.calls == 1 and set(report.terms) == {n["name"] for n in names}
    (grad,) = torch.autograd.grad(total, d["z0_hat"])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_latent_perceptual_needs_codec() -> None:
    cfg = LossesConfig(terms=[{"name": "latent_perceptual"}])
    with pytest.raises(ConfigError, match="latent_perceptual.*VAE"):
        build_loss_stack(cfg, channels=1, codec=None)
