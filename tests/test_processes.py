"""Processes: forward/target algebra, schedules, Min-SNR weights and samplers.

Expected numbers come from the formulas in DESIGN §3 / docs/processes.md, re-derived here
(numpy or plain Python), or from diffusers' DDIMScheduler as an independent reference.
Oracle networks know z0 and invert the process's input scaling and time mapping, so their
output is the exact target for whatever z_t the sampler hands them. float64 throughout
unless a test is about dtypes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from diffsr.config import DDPMConfig, FlowConfig, ResShiftConfig
from diffsr.core.errors import ConfigError
from diffsr.processes import DDPM, PROCESSES, RDDM, Process, RectifiedFlow, ResShift, build_process
from diffsr.processes.common import min_snr_weight

F64 = torch.float64
SHAPE = (3, 2, 8, 8)


def data(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> tuple[Tensor, Tensor, Tensor]:
    """(z0, zc, noise) in float64; zc is z0 plus a smooth-ish offset, like an encoded LR image."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(shape, generator=g, dtype=F64)
    zc = z0 + 0.5 * torch.randn(shape, generator=g, dtype=F64)
    noise = torch.randn(shape, generator=g, dtype=F64)
    return z0, zc, noise


def all_processes() -> list[Process]:
    return [
        RectifiedFlow(),
        RectifiedFlow(shift=3.0, min_snr_gamma=5.0),
        DDPM(prediction="eps"),
        DDPM(prediction="x0", schedule="cosine"),
        DDPM(prediction="v", schedule="cosine"),
        ResShift(),
        ResShift(steps=4, kappa=1.0, min_noise=0.2, residual=False),
        RDDM(prediction="res_noise"),
        RDDM(prediction="res"),
    ]


PROCESS_IDS = [
    "flow",
    "flow-shift",
    "ddpm-eps",
    "ddpm-x0",
    "ddpm-v",
    "resshift",
    "resshift-t4",
    "rddm",
    "rddm-res",
]


# ----------------------------------------------------------------------------- registry


def test_build_process_from_configs() -> None:
    flow = build_process(FlowConfig(shift=3.0, sample_steps=4))
    assert isinstance(flow, RectifiedFlow) and flow.shift == 3.0 and flow.default_steps == 4
    ddpm = build_process(DDPMConfig(schedule="cosine", prediction="v", train_steps=100, sample_steps=10))
    assert isinstance(ddpm, DDPM) and ddpm.prediction == "v" and ddpm.train_steps == 100
    resshift = build_process(ResShiftConfig(steps=4, min_noise=0.2))
    assert isinstance(resshift, ResShift) and resshift.default_steps == 4
    assert resshift.t_range == (0.0, 3.0)
    assert set(PROCESSES.names()) >= {"flow", "ddpm", "resshift", "rddm"}


def test_unknown_process_names_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resshift'"):
        PROCESSES.build("reshift")


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="prediction"):
        DDPM(prediction="score")
    with pytest.raises(ConfigError, match="exceed"):
        DDPM(train_steps=10, sample_steps=11)
    with pytest.raises(ConfigError, match="exceed"):
        ResShift(steps=4).sample(lambda x, t, c: x, torch.zeros(1, 1, 2, 2), steps=5)
    with pytest.raises(ConfigError, match="eta_max"):
        ResShift(min_noise=2.0, kappa=1.0)


# ----------------------------------------------------------------------------- forward algebra


@pytest.mark.parametrize("process", all_processes(), ids=PROCESS_IDS)
def test_x0_inverts_q_sample_given_the_exact_target(process: Process) -> None:
    z0, zc, noise = data()
    g = torch.Generator().manual_seed(1)
    t = process.sample_t(z0.shape[0], torch.device("cpu"), g)
    z_t = process.q_sample(z0, zc, t, noise)
    out = process.target(z0, zc, t, noise)
    torch.testing.assert_close(process.x0(z_t, out, t, zc), z0, atol=1e-10, rtol=0)


@pytest.mark.parametrize("process", all_processes(), ids=PROCESS_IDS)
def test_loss_is_zero_at_the_target_and_weighted_mse_elsewhere(process: Process) -> None:
    z0, zc, noise = data()
    t = process.sample_t(z0.shape[0], torch.device("cpu"), torch.Generator().manual_seed(2))
    target = process.target(z0, zc, t, noise)
    assert process.loss(target, z0, zc, t, noise).abs().max() < 1e-6
    loss = process.loss(target + 0.5, z0, zc, t, noise)
    assert loss.shape == (z0.shape[0],)
    # RDDM sums its separate losses: res_weight * L_res (+ noise_weight * L_eps with res_noise)
    factor = 1.0
    if isinstance(process, RDDM):
        factor = process.res_weight + (process.noise_weight if process.prediction == "res_noise" else 0.0)
    torch.testing.assert_close(loss, 0.25 * factor * process.loss_weight(t).float(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("process", all_processes(), ids=PROCESS_IDS)
def test_x0_is_differentiable(process: Process) -> None:
    z0, zc, noise = data()
    t = process.sample_t(z0.shape[0], torch.device("cpu"), torch.Generator().manual_seed(3))
    z_t = process.q_sample(z0, zc, t, noise)
    out = process.target(z0, zc, t, noise).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(process.x0(z_t, out, t, zc).square().sum(), out)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_flow_forward_and_target_by_hand() -> None:
    z0, zc, noise = data()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    flow = RectifiedFlow()
    expected = torch.stack([(1 - s) * a + s * e for s, a, e in zip(t.tolist(), z0, noise, strict=True)])
    torch.testing.assert_close(flow.q_sample(z0, zc, t, noise), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.target(z0, zc, t, noise), noise - z0, atol=0, rtol=0)


def numpy_alphas_cumprod(schedule: str, steps: int) -> np.ndarray:
    """DDPM's linear (Ho et al., scaled by 1000/T) and Nichol & Dhariwal's cosine schedules."""
    if schedule == "linear":
        betas = np.linspace(1e-4 * 1000 / steps, 0.02 * 1000 / steps, steps)
    else:
        f = [math.cos((i / steps + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(steps + 1)]
        betas = np.array([min(1 - f[i + 1] / f[i], 0.999) for i in range(steps)])
    return np.cumprod(1 - np.minimum(betas, 0.999))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_v_target_by_hand(schedule: str) -> None:
    z0, zc, noise = data()
    ab = numpy_alphas_cumprod(schedule, 1000)
    t = torch.tensor([0.0, 500.0, 999.0])
    ddpm = DDPM(schedule=schedule, prediction="v")
    a = torch.from_numpy(np.sqrt(ab[[0, 500, 999]])).view(-1, 1, 1, 1)
    s = torch.from_numpy(np.sqrt(1 - ab[[0, 500, 999]])).view(-1, 1, 1, 1)
    z_t = ddpm.q_sample(z0, zc, t, noise)
    torch.testing.assert_close(z_t, a * z0 + s * noise, atol=1e-12, rtol=0)
    v = ddpm.target(z0, zc, t, noise)
    torch.testing.assert_close(v, a * noise - s * z0, atol=1e-12, rtol=0)
    # the identity z0 = sqrt(ab) z_t - sqrt(1 - ab) v, since ab + (1 - ab) = 1
    torch.testing.assert_close(a * z_t - s * v, z0, atol=1e-12, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1000, 100])
def test_ddpm_schedule_matches_the_formula(schedule: str, steps: int) -> None:
    ddpm = DDPM(schedule=schedule, train_steps=steps, sample_steps=1)
    np.testing.assert_allclose(ddpm.alphas_cumprod.numpy(), numpy_alphas_cumprod(schedule, steps), rtol=1e-12)


@pytest.mark.parametrize(("schedule", "name"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_ddpm_schedule_matches_diffusers(schedule: str, name: str) -> None:
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name).alphas_cumprod
    # diffusers builds its betas in float32
    np.testing.assert_allclose(DDPM(schedule=schedule).alphas_cumprod.numpy(), reference.numpy(), rtol=2e-5)


# ----------------------------------------------------------------------------- Min-SNR


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


# ----------------------------------------------------------------------------- ResShift schedule


def numpy_etas(steps: int, kappa: float, p: float, min_noise: float, eta_max: float) -> np.ndarray:
    """DESIGN §3, written out term by term."""
    s1 = min(min_noise / kappa, min_noise)
    b = math.exp(math.log(eta_max / s1) / (steps - 1))
    sqrt_eta = [s1 * b ** (((t - 1) / (steps - 1)) ** p * (steps - 1)) for t in range(1, steps + 1)]
    return np.array(sqrt_eta) ** 2


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


@pytest.mark.parametrize(
    "process", [DDPM(train_steps=20, sample_steps=5), ResShift(steps=15), RDDM(steps=10)]
)
def test_integer_sample_t(process: Process) -> None:
    t = process.sample_t(4000, torch.device("cpu"), torch.Generator().manual_seed(0))
    high = int(process.t_range[1])
    assert t.dtype == torch.float32 and torch.equal(t, t.round())
    assert set(t.long().tolist()) == set(range(high + 1))


@pytest.mark.parametrize("process", all_processes(), ids=PROCESS_IDS)
def test_sample_t_is_seeded(process: Process) -> None:
    draw = lambda seed: process.sample_t(64, torch.device("cpu"), torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


# ----------------------------------------------------------------------------- oracle samplers


class Recorder:
    """Wraps an oracle: records the unscaled z_t and the process time t it was called at."""

    def __init__(
        self, oracle: Callable[[Tensor, Tensor], Tensor], unscale: Callable[[Tensor, Tensor], tuple]
    ):
        self.oracle, self.unscale = oracle, unscale
        self.z_t: list[Tensor] = []
        self.t: list[Tensor] = []

    def __call__(self, x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        z_t, t = self.unscale(x, t_input)
        self.z_t.append(z_t.clone())
        self.t.append(t.clone())
        return self.oracle(z_t, t)


def flow_oracle(z0: Tensor) -> Recorder:
    # z_t = (1 - t) z0 + t eps  =>  v = eps - z0 = (z_t - z0) / t
    return Recorder(lambda z_t, t: (z_t - z0) / t.view(-1, 1, 1, 1), lambda x, ti: (x, ti / 1000))


def ddpm_oracle(ddpm: DDPM, z0: Tensor) -> Recorder:
    ab_table = torch.from_numpy(numpy_alphas_cumprod(ddpm.schedule, ddpm.train_steps))

    def oracle(z_t: Tensor, t: Tensor) -> Tensor:
        ab = ab_table[t.round().long()].view(-1, 1, 1, 1)
        eps = (z_t - ab.sqrt() * z0) / (1 - ab).sqrt()
        return {"eps": eps, "x0": z0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * z0}[ddpm.prediction]

    return Recorder(oracle, lambda x, ti: (x, ti * ddpm.train_steps / 1000))


def resshift_oracle(process: ResShift, z0: Tensor, zc: Tensor) -> Recorder:
    eta = torch.from_numpy(
        numpy_etas(process.steps, process.kappa, process.p, process.min_noise, process.eta_max)
    )

    def unscale(x: Tensor, t_input: Tensor) -> tuple[Tensor, Tensor]:
        t = t_input * process.steps / 1000
        e = eta[t.round().long()].view(-1, 1, 1, 1)
        return x * (process.kappa**2 * e + 1).sqrt(), t

    return Recorder(lambda z_t, t: z0 - zc if process.residual else z0, unscale)


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


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Trailing spacing (Lin et al. 2024)."""
    return [round(T - i * T / steps) - 1 for i in range(steps)]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [50, 7, 1])
def test_ddpm_oracle_sampling(prediction: str, schedule: str, steps: int) -> None:
    z0, zc, noise = data()
    ddpm = DDPM(schedule=schedule, prediction=prediction)
    net = ddpm_oracle(ddpm, z0)
    out = ddpm.sample(net, zc, steps=steps, noise=noise)
    torch.testing.assert_close(out, z0, atol=1e-4, rtol=0)
    # DDIM with exact x0 keeps eps' = (z_T - sqrt(ab_T) z0) / sqrt(1 - ab_T) fixed along the path
    ab = numpy_alphas_cumprod(schedule, 1000)
    expected_t = ddim_timesteps(1000, steps)
    eps = (noise - math.sqrt(ab[999]) * z0) / math.sqrt(1 - ab[999])
    assert [round(t[0].item()) for t in net.t] == expected_t
    for t, z_rec in zip(expected_t, net.z_t, strict=True):
        expected = noise if t == 999 else math.sqrt(ab[t]) * z0 + math.sqrt(1 - ab[t]) * eps
        torch.testing.assert_close(z_rec, expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize(
    ("prediction", "name"), [("eps", "epsilon"), ("x0", "sample"), ("v", "v_prediction")]
)
@pytest.mark.parametrize(
    ("schedule", "beta_schedule"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")]
)
def test_ddim_matches_diffusers(prediction: str, name: str, schedule: str, beta_schedule: str) -> None:
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule=beta_schedule,
        prediction_type=name,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )
    steps = 10  # divides T: diffusers steps to t - T // steps, the next trailing timestep
    scheduler.set_timesteps(steps)
    # diffusers' float32 alphas_cumprod in both, so the comparison is about the update, not the schedule
    ddpm = DDPM(schedule=schedule, prediction=prediction)
    ddpm.alphas_cumprod = scheduler.alphas_cumprod.double()
    ddpm.sqrt_ab, ddpm.sqrt_1mab = ddpm.alphas_cumprod.sqrt(), (1 - ddpm.alphas_cumprod).sqrt()
    _, zc, noise = data()

    def net(x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        return torch.tanh(x) * 0.8 + 0.1 * cond + t_input.view(-1, 1, 1, 1) / 1000

    ours = ddpm.sample(net, zc, steps=steps, noise=noise)
    z = noise.clone()
    for t in scheduler.timesteps:
        out = net(z, torch.full((3,), float(t), dtype=F64), zc)
        z = scheduler.step(out, int(t), z, eta=0.0).prev_sample
    assert [int(t) for t in scheduler.timesteps] == ddpm.timesteps(steps)
    torch.testing.assert_close(ours, z.to(F64), atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize("prediction", ["res_noise", "res"])
@pytest.mark.parametrize("steps", [None, 4])
def test_rddm_oracle_sampling(prediction: str, steps: int | None) -> None:
    z0, zc, noise = data()
    process = RDDM(steps=10, noise_scale=0.5, prediction=prediction)
    assert process.abar[-1].item() == pytest.approx(1.0)
    assert process.bbar[-1].item() ** 2 == pytest.approx(0.5)
    assert (process.abar.diff() > 0).all() and (process.bbar.diff() > 0).all() and process.bbar[0] > 0
    abar, bbar = process.abar, process.bbar
    path_eps = noise  # deterministic sampler with exact predictions keeps eps fixed

    def net(x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        t = (t_input * 10 / 1000).round().long()
        a, b = abar[t].view(-1, 1, 1, 1), bbar[t].view(-1, 1, 1, 1)
        res = zc - z0
        eps = (x - z0 - a * res) / b
        torch.testing.assert_close(eps, path_eps, atol=1e-10, rtol=0)
        return torch.cat([res, eps], 1) if prediction == "res_noise" else res

    out = process.sample(net, zc, steps=steps, noise=noise)
    torch.testing.assert_close(out, z0, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- hooks, determinism


def zero_net(x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
    return torch.zeros_like(x)


def samplers() -> list[tuple[Process, int]]:
    return [
        (RectifiedFlow(), 4),
        (DDPM(schedule="cosine", prediction="v"), 6),
        (DDPM(prediction="eps"), 3),
        (ResShift(), 15),
        (ResShift(steps=4, min_noise=0.2), 3),
        (RDDM(prediction="res"), 5),
    ]


SAMPLER_IDS = ["flow", "ddpm-v", "ddpm-eps", "resshift", "resshift-t4", "rddm"]


@pytest.mark.parametrize(("process", "steps"), samplers(), ids=SAMPLER_IDS)
def test_x0_hook_is_called_each_step_and_used(process: Process, steps: int) -> None:
    z0, zc, _ = data()
    calls: list[tuple[tuple, tuple, float]] = []

    def hook(x0_hat: Tensor, t: Tensor) -> Tensor:
        calls.append((tuple(x0_hat.shape), tuple(t.shape), t[0].item()))
        return z0

    out = process.sample(zero_net, zc, steps=steps, generator=torch.Generator().manual_seed(0), x0_hook=hook)
    assert len(calls) == steps
    assert all(c[0] == SHAPE and c[1] == (3,) for c in calls)
    times = [c[2] for c in calls]
    assert times == sorted(times, reverse=True) and times[0] == pytest.approx(process.t_range[1])
    torch.testing.assert_close(out, z0, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("process", "steps"), samplers(), ids=SAMPLER_IDS)
def test_identity_hook_changes_nothing(process: Process, steps: int) -> None:
    _, zc, noise = data()

    def net(x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        return 0.3 * torch.tanh(x) - 0.2 * cond

    plain = process.sample(net, zc, steps=steps, generator=torch.Generator().manual_seed(0), noise=noise)
    hooked = process.sample(
        net, zc, steps=steps, generator=torch.Generator().manual_seed(0), noise=noise, x0_hook=lambda x, t: x
    )
    torch.testing.assert_close(hooked, plain, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize(("process", "steps"), samplers(), ids=SAMPLER_IDS)
def test_sampling_is_deterministic_given_the_generator(process: Process, steps: int) -> None:
    _, zc, _ = data()
    zc = zc.float()

    def net(x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        return 0.5 * x - 0.1 * cond

    draw = lambda seed: process.sample(net, zc, steps=steps, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    first = draw(0)
    assert first.dtype == torch.float32 and first.shape == zc.shape and torch.isfinite(first).all()
    assert torch.equal(first, draw(0))
    assert not torch.equal(first, draw(1))


def test_default_steps_are_used() -> None:
    _, zc, _ = data()
    calls: list[Tensor] = []

    def net(x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        calls.append(t_input)
        return torch.zeros_like(x)

    for process, expected in [
        (RectifiedFlow(sample_steps=3), 3),
        (DDPM(sample_steps=4), 4),
        (ResShift(steps=4), 4),
    ]:
        calls.clear()
        process.sample(net, zc, generator=torch.Generator().manual_seed(0))
        assert len(calls) == expected, process.name


def test_hooked_updates_follow_the_hooked_x0() -> None:
    """Hook -> z0 with a zero net: flow steps z_next = (t_next / t) z + (1 - t_next / t) z0 (eps_hat
    recomputed from the hooked x0), DDIM z_prev = sqrt(ab') z0 + sqrt(1 - ab') (z - sqrt(ab) z0) /
    sqrt(1 - ab). The hook sees x0(z, 0): z for flow (v = 0), z / sqrt(ab) for DDPM (eps = 0)."""
    z0, zc, noise = data()
    seen: list[Tensor] = []

    def hook(x0_hat: Tensor, t: Tensor) -> Tensor:
        seen.append(x0_hat.clone())
        return z0

    times = [1.0, 2 / 3, 1 / 3]
    RectifiedFlow().sample(zero_net, zc, steps=3, noise=noise, x0_hook=hook)
    z = noise
    for t, t_next, x0_in in zip(times, times[1:] + [0.0], seen, strict=True):
        torch.testing.assert_close(x0_in, z, atol=1e-12, rtol=0)
        z = (t_next / t) * z + (1 - t_next / t) * z0

    seen.clear()
    ab = numpy_alphas_cumprod("linear", 1000)
    DDPM(prediction="eps").sample(zero_net, zc, steps=3, noise=noise, x0_hook=hook)
    z = noise
    steps = ddim_timesteps(1000, 3)
    for t, t_prev, x0_in in zip(steps, steps[1:] + [None], seen, strict=True):
        torch.testing.assert_close(x0_in, z / math.sqrt(ab[t]), atol=1e-10, rtol=0)
        if t_prev is not None:
            eps = (z - math.sqrt(ab[t]) * z0) / math.sqrt(1 - ab[t])
            z = math.sqrt(ab[t_prev]) * z0 + math.sqrt(1 - ab[t_prev]) * eps


@pytest.mark.parametrize(
    ("process", "t", "expected"),
    [
        (RectifiedFlow(), [0.25, 1.0], [250.0, 1000.0]),
        (DDPM(), [0.0, 999.0], [0.0, 999.0]),
        (DDPM(train_steps=100, sample_steps=10), [10.0, 99.0], [100.0, 990.0]),
        (ResShift(steps=4), [1.0, 3.0], [250.0, 750.0]),
    ],
)
def test_time_input(process: Process, t: list[float], expected: list[float]) -> None:
    z = torch.zeros(2, 1, 2, 2)
    seen = []
    process.denoise(lambda x, t_input, c: seen.append(t_input) or x, z, torch.tensor(t), z)
    torch.testing.assert_close(seen[0], torch.tensor(expected))


def test_rddm_x0_uses_both_halves() -> None:
    """RDDM's z0_hat = z_t - abar res_hat - bbar eps_hat (hand-built schedule: alpha_i ~ T + 1 - i,
    beta2_i ~ i), not just zc - res_hat, when the halves disagree."""
    z0, zc, noise = data()
    process = RDDM(steps=4, noise_scale=0.04, prediction="res_noise")
    t = torch.tensor([0.0, 2.0, 3.0])
    abar = np.cumsum([4, 3, 2, 1]) / 10
    bbar = np.sqrt(np.cumsum([1, 2, 3, 4]) / 10 * 0.04)
    a = torch.from_numpy(abar[[0, 2, 3]]).view(-1, 1, 1, 1)
    b = torch.from_numpy(bbar[[0, 2, 3]]).view(-1, 1, 1, 1)
    z_t = process.q_sample(z0, zc, t, noise)
    torch.testing.assert_close(z_t, z0 + a * (zc - z0) + b * noise, atol=1e-12, rtol=0)
    res_hat, eps_hat = torch.randn_like(z0), torch.randn_like(z0)
    got = process.x0(z_t, torch.cat([res_hat, eps_hat], 1), t, zc)
    torch.testing.assert_close(got, z_t - a * res_hat - b * eps_hat, atol=1e-12, rtol=0)
