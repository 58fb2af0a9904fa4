"""Min-SNR loss weights for flow, DDPM and ResShift, and the shared weight's guards at SNR 0 and inf.

Expected numbers come from the formulas in DESIGN §3 / docs/processes.md, re-derived here
(numpy or plain Python). float64 throughout unless a test is about dtypes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffsr.processes import DDPM, RectifiedFlow, ResShift
from diffsr.processes.common import min_snr_weight
from tests.processes._helpers import F64, numpy_alphas_cumprod, numpy_etas


def test_flow_min_snr_by_hand() -> None:
    flow = RectifiedFlow(min_snr_gamma=5.0)
    t = torch.tensor([0.5, 0.2, 0.9])
    # t=0.5: SNR 1 -> 1 * 0.25; t=0.2: SNR 16 -> 5 * 0.04; t=0.9: SNR 1/81 -> 1/81 * 0.81
    torch.testing.assert_close(flow.loss_weight(t), torch.tensor([0.25, 0.2, 0.01]), atol=1e-7, rtol=0)
    ends = flow.loss_weight(torch.tensor([0.0, 1e-5, 1 - 1e-5, 1.0]))
    assert torch.isfinite(ends).all()
    torch.testing.assert_close(ends, torch.tensor([0.0, 5e-10, 1e-10, 0.0]), atol=1e-9, rtol=0)
    assert torch.equal(RectifiedFlow().loss_weight(t), torch.ones(3))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_min_snr_by_hand(prediction: str, schedule: str) -> None:
    gamma = 5.0
    ddpm = DDPM(schedule=schedule, prediction=prediction, min_snr_gamma=gamma)
    ab = numpy_alphas_cumprod(schedule, 1000)
    steps = [0, 10, 100, 300, 999]
    snr = ab[steps] / (1 - ab[steps])
    clipped = np.minimum(snr, gamma)
    expected = {"x0": clipped, "eps": clipped / snr, "v": clipped / (snr + 1)}[prediction]
    got = ddpm.loss_weight(torch.tensor(steps, dtype=torch.float32))
    assert torch.isfinite(got).all() and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-12)
    uniform = DDPM(min_snr_gamma=None).loss_weight(torch.tensor(steps, dtype=torch.float32))
    assert torch.equal(uniform, torch.ones(5))


def test_cosine_end_has_tiny_snr_and_finite_weights() -> None:
    ddpm = DDPM(schedule="cosine", prediction="eps")
    t_end = torch.tensor([999.0])
    assert ddpm.snr(t_end).item() < 1e-8
    assert ddpm.loss_weight(t_end).item() == pytest.approx(1.0)  # SNR < gamma: eps weight 1


def test_min_snr_weight_guards_zero_and_infinite_snr() -> None:
    snr = torch.tensor([0.0, 1.0, 5.0, 20.0, math.inf], dtype=F64)
    expect = {
        "x0": [0.0, 1.0, 5.0, 5.0, 5.0],
        "eps": [1.0, 1.0, 1.0, 0.25, 0.0],
        "v": [0.0, 0.5, 5 / 6, 5 / 21, 0.0],
    }
    for prediction, values in expect.items():
        got = min_snr_weight(snr, 5.0, prediction)
        assert torch.isfinite(got).all(), prediction
        torch.testing.assert_close(got, torch.tensor(values, dtype=F64), atol=1e-15, rtol=0)


def test_resshift_min_snr_by_hand() -> None:
    kappa, gamma = 2.0, 5.0
    process = ResShift(kappa=kappa, min_snr_gamma=gamma)
    eta = numpy_etas(15, kappa, 0.3, 0.04, 0.99)
    t = torch.arange(15, dtype=torch.float32)
    expected = np.minimum((1 - eta) ** 2 / (kappa**2 * eta), gamma)
    np.testing.assert_allclose(process.loss_weight(t).numpy(), expected, rtol=1e-6)
    assert process.loss_weight(torch.tensor([0.0])).item() == pytest.approx(gamma)  # eta_1 = 4e-4
    assert torch.equal(ResShift().loss_weight(t), torch.ones(15))
