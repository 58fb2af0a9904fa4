"""plan_step: per-term factors (weight x gate x pairing) and the rows to decode."""

from __future__ import annotations

import torch

from diffsr.losses import (
    HardGate,
    LatentL1Loss,
    LossTerm,
)
from diffsr.losses.plan import plan_step
from tests.losses._helpers import DT, FakeGAN, Recorder


def test_plan_step_factors_and_rows() -> None:
    # factor = weight * gate(t) * pairing; the decode covers the active pixel rows plus the rows a
    # GAN term's discriminator learns from, even at weight 0; latent rows are never decoded
    t = torch.tensor([0.1, 0.9, 0.2, 0.6])
    paired = torch.tensor([True, True, False, True])
    terms = [
        LossTerm("l1", Recorder(), weight=0.5, gate=HardGate(0.5)),
        LossTerm("lat", LatentL1Loss(), space="latent", gate=HardGate(0.95), paired_only=False),
        LossTerm("gan", FakeGAN(), weight=0.0, gate=HardGate(0.7)),
    ]
    plan = plan_step(terms, t=t, step=0, paired=paired, b=4, device=torch.device("cpu"), fdtype=DT)
    assert plan.weights == [0.5, 1.0, 0.0]
    assert plan.factors[0].tolist() == [0.5, 0.0, 0.0, 0.0]  # row 2 is unpaired, rows 1 and 3 gated off
    assert plan.gates[2].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert plan.active.tolist() == [[True, False, False, False], [True] * 4, [False] * 4]
    assert list(plan.gan_rows) == [2] and plan.gan_rows[2].tolist() == [True, False, False, True]
    assert plan.pixel_rows.tolist() == [True, False, False, True]
    assert plan.paired is not None and plan.paired.tolist() == paired.tolist()
