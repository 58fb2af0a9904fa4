"""DDPM: the v target, the linear / cosine schedules (formula and diffusers), and DDIM sampling with an
oracle and against diffusers' DDIMScheduler.

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

from diffsr.processes import DDPM
from tests.processes._helpers import F64, Recorder, data, ddim_timesteps, numpy_alphas_cumprod


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


def ddpm_oracle(ddpm: DDPM, z0: Tensor) -> Recorder:
    ab_table = torch.from_numpy(numpy_alphas_cumprod(ddpm.schedule, ddpm.train_steps))

    def oracle(z_t: Tensor, t: Tensor) -> Tensor:
        ab = ab_table[t.round().long()].view(-1, 1, 1, 1)
        eps = (z_t - ab.sqrt() * z0) / (1 - ab).sqrt()
        return {"eps": eps, "x0": z0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * z0}[ddpm.prediction]

    return Recorder(oracle, lambda x, ti: (x, ti * ddpm.train_steps / 1000))


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
