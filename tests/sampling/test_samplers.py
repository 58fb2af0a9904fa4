"""The sampler (sampling/samplers.py, through Process.sample): the x0 hook is called every step and
used, an identity hook changes nothing, sampling is deterministic given the generator, default
steps, and hooked updates follow the hooked x0.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from diffsr.processes import DDPM, RDDM, Process, RectifiedFlow, ResShift
from tests.processes._helpers import SHAPE, data, ddim_timesteps, numpy_alphas_cumprod


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
