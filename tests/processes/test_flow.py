"""Rectified flow: forward and target by hand, logit-normal sample_t with shift, and sampling with an
oracle (the straight path) and on Gaussian data (Euler is first order).

Expected numbers come from the formulas in DESIGN §3 / docs/processes.md, re-derived here
(numpy or plain Python), or from diffusers as an independent reference. Oracle networks know z0
and invert the process's input scaling and time mapping, so their output is the exact target for
whatever z_t the sampler hands them. float64 throughout unless a test is about dtypes.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from diffsr.processes import RectifiedFlow
from tests.processes._helpers import F64, Recorder, data


def test_flow_forward_and_target_by_hand() -> None:
    z0, zc, noise = data()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    flow = RectifiedFlow()
    expected = torch.stack([(1 - s) * a + s * e for s, a, e in zip(t.tolist(), z0, noise, strict=True)])
    torch.testing.assert_close(flow.q_sample(z0, zc, t, noise), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.target(z0, zc, t, noise), noise - z0, atol=0, rtol=0)


# ----------------------------------------------------------------------------- sample_t


def test_flow_sample_t_range_and_shift() -> None:
    device = torch.device("cpu")
    for shift in [1.0, 3.0]:
        t = RectifiedFlow(shift=shift).sample_t(20000, device, torch.Generator().manual_seed(0))
        assert t.dtype == torch.float32 and t.shape == (20000,)
        assert t.min() >= 1e-5 and t.max() <= 1 - 1e-5
        # the median of sigmoid(N(0, 1)) is 1/2, shifted to s/2 / (1 + (s-1)/2) = s / (1 + s)
        assert t.median().item() == pytest.approx(shift / (1 + shift), abs=0.015)
    t = RectifiedFlow(logit_mean=0.5, logit_std=2.0).sample_t(20000, device, torch.Generator().manual_seed(1))
    logit = torch.logit(t.double())
    assert logit.mean().item() == pytest.approx(0.5, abs=0.05)
    assert logit.std().item() == pytest.approx(2.0, rel=0.03)


def flow_oracle(z0: Tensor) -> Recorder:
    # z_t = (1 - t) z0 + t eps  =>  v = eps - z0 = (z_t - z0) / t
    return Recorder(lambda z_t, t: (z_t - z0) / t.view(-1, 1, 1, 1), lambda x, ti: (x, ti / 1000))


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 2, 5, 8])
def test_flow_oracle_sampling_follows_the_straight_path(shift: float, steps: int) -> None:
    z0, zc, noise = data()
    flow = RectifiedFlow(shift=shift)
    net = flow_oracle(z0)
    out = flow.sample(net, zc, steps=steps, noise=noise)
    torch.testing.assert_close(out, z0, atol=1e-4, rtol=0)
    u = [1 - i / steps for i in range(steps)]
    times = [shift * s / (1 + (shift - 1) * s) for s in u]
    assert len(net.t) == steps
    for t_rec, z_rec, s in zip(net.t, net.z_t, times, strict=True):
        torch.testing.assert_close(t_rec, torch.full((3,), s, dtype=F64), atol=1e-12, rtol=0)
        torch.testing.assert_close(z_rec, (1 - s) * z0 + s * noise, atol=1e-10, rtol=0)


def test_flow_euler_converges_on_gaussian_data() -> None:
    """z0 ~ N(0, s^2): E[z0 | z_t] = (1-t) s^2 / sigma_t^2 z_t with sigma_t^2 = (1-t)^2 s^2 + t^2, and
    the probability-flow ODE maps the noise n to z_t = sigma_t n, so z0 = s n. Euler is first order."""
    s = 0.5
    flow = RectifiedFlow()

    def net(x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        t = (t_input / 1000).view(-1, 1, 1, 1)
        x0 = (1 - t) * s**2 / ((1 - t) ** 2 * s**2 + t**2) * x
        return (x - x0) / t

    _, zc, noise = data()
    errors = [
        (flow.sample(net, zc, steps=n, noise=noise) - s * noise).abs().max().item() for n in (4, 16, 64)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02 * noise.abs().max().item()
    assert errors[0] / errors[1] == pytest.approx(4, rel=0.5)  # first order
