"""What every process must do: x0 inverts q_sample given the exact target, the loss is zero there and
a weighted MSE elsewhere, x0 is differentiable, sample_t is seeded (and integer where it should
be), and the time input the net sees.
"""

from __future__ import annotations

import pytest
import torch

from diffsr.processes import DDPM, RDDM, Process, RectifiedFlow, ResShift
from tests.processes._helpers import data


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
