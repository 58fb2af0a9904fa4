"""ResShift: the eta schedule, forward process and input scaling by hand, prior moments, the posterior
as Gaussian conditioning, and sampling with an oracle (path and marginals).

Expected numbers come from the formulas in DESIGN §3 / docs/processes.md, re-derived here
(numpy or plain Python), or from diffusers as an independent reference. Oracle networks know z0
and invert the process's input scaling and time mapping, so their output is the exact target for
whatever z_t the sampler hands them. float64 throughout unless a test is about dtypes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from diffsr.processes import ResShift
from tests.processes._helpers import F64, Recorder, data, numpy_etas


@pytest.mark.parametrize(
    ("steps", "kappa", "min_noise", "sqrt_eta_1"),
    [(15, 2.0, 0.04, 0.02), (4, 2.0, 0.2, 0.1), (4, 1.0, 0.2, 0.2), (4, 0.5, 0.2, 0.2)],
)
def test_resshift_schedule(steps: int, kappa: float, min_noise: float, sqrt_eta_1: float) -> None:
    process = ResShift(steps=steps, kappa=kappa, min_noise=min_noise)
    sqrt_eta = process.etas.sqrt()
    assert sqrt_eta[0].item() == pytest.approx(sqrt_eta_1, rel=1e-12)
    assert sqrt_eta[-1].item() == pytest.approx(0.99, rel=1e-12)
    assert (process.etas.diff() > 0).all()
    np.testing.assert_allclose(
        process.etas.numpy(), numpy_etas(steps, kappa, 0.3, min_noise, 0.99), rtol=1e-12
    )


def test_resshift_forward_and_input_scaling_by_hand() -> None:
    z0, zc, noise = data()
    process = ResShift()
    eta = numpy_etas(15, 2.0, 0.3, 0.04, 0.99)
    idx = [0, 7, 14]
    t = torch.tensor(idx, dtype=torch.float32)
    e = torch.from_numpy(eta[idx]).view(-1, 1, 1, 1)
    expected = z0 + e * (zc - z0) + 2.0 * e.sqrt() * noise
    z_t = process.q_sample(z0, zc, t, noise)
    torch.testing.assert_close(z_t, expected, atol=1e-12, rtol=0)
    seen = {}

    def net(x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        seen.update(x=x, t_input=t_input, cond=cond)
        return torch.zeros_like(x)

    process.denoise(net, z_t, t, zc)
    torch.testing.assert_close(seen["x"], z_t / (4.0 * e + 1).sqrt(), atol=1e-12, rtol=0)
    torch.testing.assert_close(seen["t_input"], torch.tensor([0.0, 7000 / 15, 14000 / 15], dtype=F64))
    assert seen["cond"] is zc


def test_resshift_prior_moments() -> None:
    process = ResShift()
    zc = torch.full((20000, 1, 2, 2), 0.3, dtype=F64)
    noise = torch.randn(zc.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    prior = process.prior(zc, noise)
    # N(y, kappa^2 eta_T) with sqrt(eta_T) = 0.99: std 1.98; 80000 draws -> mean s.e. 0.007
    assert prior.mean().item() == pytest.approx(0.3, abs=0.03)
    assert prior.std().item() == pytest.approx(2 * 0.99, rel=0.02)


def test_resshift_posterior_is_gaussian_conditioning() -> None:
    """Posterior of z_{t-1} given z_t (and z0, y) from the joint Gaussian of the forward marginals."""
    process = ResShift()
    kappa, eta = 2.0, process.etas.tolist()
    z0, y, z_t = 0.7, -0.4, 1.3
    for t in range(1, 15):
        # jointly Gaussian: means m_s = z0 + eta_s (y - z0), Var z_s = k^2 eta_s,
        # Cov(z_{t-1}, z_t) = k^2 eta_{t-1} (z_t adds independent noise to z_{t-1})
        m_prev, m_t = z0 + eta[t - 1] * (y - z0), z0 + eta[t] * (y - z0)
        cov, var_t, var_prev = kappa**2 * eta[t - 1], kappa**2 * eta[t], kappa**2 * eta[t - 1]
        mean_ref = m_prev + cov / var_t * (z_t - m_t)
        var_ref = var_prev - cov**2 / var_t
        mean, var = process.posterior(
            torch.tensor(z_t, dtype=F64), torch.tensor(z0, dtype=F64), eta[t], eta[t - 1]
        )
        assert mean.item() == pytest.approx(mean_ref, abs=1e-12)
        assert var == pytest.approx(var_ref, abs=1e-12)
    mean, var = process.posterior(torch.tensor(z_t), torch.tensor(z0), eta[0], 0.0)
    assert mean.item() == pytest.approx(z0) and var == 0.0


def test_resshift_transition_is_consistent_with_the_marginals() -> None:
    """Monte Carlo: z_t = z_{t-1} + alpha_t (y - z0) + kappa sqrt(alpha_t) eps from q(z_{t-1}) has the
    marginal q_sample(t); regressing z_{t-1} on z_t recovers the posterior coefficients."""
    process = ResShift()
    g = torch.Generator().manual_seed(0)
    n, t = 200_000, 6
    z0, y = torch.full((n, 1, 1, 1), 0.5, dtype=F64), torch.full((n, 1, 1, 1), -1.0, dtype=F64)
    eta_prev, eta_t = process.etas[t - 1].item(), process.etas[t].item()
    z_prev = process.q_sample(z0, y, torch.full((n,), t - 1.0), torch.randn(z0.shape, generator=g, dtype=F64))
    alpha = eta_t - eta_prev
    z_t = z_prev + alpha * (y - z0) + 2.0 * math.sqrt(alpha) * torch.randn(z0.shape, generator=g, dtype=F64)
    direct = process.q_sample(z0, y, torch.full((n,), float(t)), torch.zeros_like(z0))
    assert z_t.mean().item() == pytest.approx(direct[0].item(), abs=0.02)
    assert z_t.var().item() == pytest.approx(4 * eta_t, rel=0.02)
    slope = torch.cov(torch.stack([z_prev.flatten(), z_t.flatten()]))[0, 1] / z_t.var()
    resid = z_prev - slope * z_t
    mean_ref, var_ref = process.posterior(torch.tensor(0.0), torch.tensor(0.0), eta_t, eta_prev)
    assert slope.item() == pytest.approx(eta_prev / eta_t, abs=0.01)
    assert resid.var().item() == pytest.approx(var_ref, rel=0.03)


def resshift_oracle(process: ResShift, z0: Tensor, zc: Tensor) -> Recorder:
    eta = torch.from_numpy(
        numpy_etas(process.steps, process.kappa, process.p, process.min_noise, process.eta_max)
    )

    def unscale(x: Tensor, t_input: Tensor) -> tuple[Tensor, Tensor]:
        t = t_input * process.steps / 1000
        e = eta[t.round().long()].view(-1, 1, 1, 1)
        return x * (process.kappa**2 * e + 1).sqrt(), t

    return Recorder(lambda z_t, t: z0 - zc if process.residual else z0, unscale)


@pytest.mark.parametrize(
    ("kwargs", "steps"),
    [
        ({}, None),
        ({}, 5),
        ({"steps": 4, "min_noise": 0.2}, None),
        ({"steps": 4, "min_noise": 0.2}, 2),
        ({"steps": 4, "min_noise": 0.2, "residual": False, "kappa": 1.0}, 3),
    ],
)
def test_resshift_oracle_sampling(kwargs: dict, steps: int | None) -> None:
    z0, zc, noise = data()
    process = ResShift(**kwargs)
    net = resshift_oracle(process, z0, zc)
    out = process.sample(net, zc, steps=steps, generator=torch.Generator().manual_seed(0), noise=noise)
    torch.testing.assert_close(out, z0, atol=1e-4, rtol=0)
    T = process.steps
    n = T if steps is None else steps
    expected_t = [round((T - 1) * (1 - i / (n - 1))) for i in range(n)]  # evenly respaced, T-1 ... 0
    assert [round(t[0].item()) for t in net.t] == expected_t
    # the first call sees the prior y + kappa sqrt(eta_T) noise, unscaled by the recorder
    torch.testing.assert_close(net.z_t[0], zc + process.kappa * 0.99 * noise, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("kwargs", "steps"), [({}, None), ({}, 5), ({"steps": 4, "min_noise": 0.2}, 2)])
def test_resshift_sampler_marginals(kwargs: dict, steps: int | None) -> None:
    """With exact x0 the ancestral chain from the prior has, at every kept t, variance kappa^2 eta_t and
    mean z0 + (eta_t / eta_T)(y - z0): the posterior recursion maps the prior's offset
    (y - z0) = (1 / eta_T) eta_T (y - z0) down proportionally to eta (docs/processes.md)."""
    process = ResShift(**kwargs)
    shape = (2000, 1, 4, 4)
    z0 = torch.full(shape, 0.3, dtype=F64)
    zc = torch.full(shape, -0.5, dtype=F64)
    net = resshift_oracle(process, z0, zc)
    process.sample(net, zc, steps=steps, generator=torch.Generator().manual_seed(0))
    eta = numpy_etas(process.steps, process.kappa, process.p, process.min_noise, process.eta_max)
    for t, z_t in zip(net.t, net.z_t, strict=True):
        e = eta[round(t[0].item())]
        sd = process.kappa * math.sqrt(e)
        # 32000 values: mean s.e. sd / 179, variance rel. s.e. 0.008
        assert z_t.mean().item() == pytest.approx(0.3 + e / eta[-1] * (-0.8), abs=5 * sd / 179)
        assert z_t.var().item() == pytest.approx(sd**2, rel=0.05)
