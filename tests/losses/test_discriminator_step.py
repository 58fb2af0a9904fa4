"""The discriminator side of a GAN term: only paired rows are real images, a non-finite step is
skipped and counted, a non-finite state is repaired on load, the step runs on every process even
without rows, and the discriminator trains while the generator weight is still 0.
"""

from __future__ import annotations

import torch

from diffsr.losses.adversarial import GANLoss
from diffsr.losses.gates import HardGate
from diffsr.losses.stack import LossStack, LossTerm
from tests.losses._helpers import B, S, _inputs


def _decode(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return z * 1.0  # pixel space = latent space


def _gan(**kwargs: object) -> GANLoss:
    torch.manual_seed(0)
    return GANLoss(1, width=8, layers=2, r1_gamma=0.0, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- real images


def test_unpaired_rows_are_not_real_images_for_the_discriminator() -> None:
    x = _inputs()
    gan = _gan()
    stack = LossStack([LossTerm("gan", gan, weight=0.1, paired_only=False)], dead_after=None)
    paired = torch.tensor([True, False, True, False])
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    gan.discriminator_step = lambda real, fake, step=None: seen.append((real, fake)) or {}  # type: ignore[method-assign]
    stack(z0_hat=x["z0_hat"], t=x["t"], step=0, decode=_decode, hr=x["hr"], paired=paired)
    stack.discriminator_step(0)
    (real, fake), = seen
    assert torch.equal(real, x["hr"][[0, 2]])  # reals: the paired rows only
    assert fake.shape[0] == B  # fakes: every row the generator term acts on


# ----------------------------------------------------------------------------- non-finite steps and states


def test_nonfinite_discriminator_step_is_skipped_and_counted() -> None:
    gan = _gan()
    before = [p.detach().clone() for p in gan.discriminator.parameters()]
    real = torch.rand(2, 1, S, S)
    fake = torch.rand(2, 1, S, S)
    fake[0, 0, 0, 0] = float("nan")
    gan.discriminator_step(real, fake, step=0)
    assert gan.skipped_steps == 1 and gan.last_rows == 0
    assert all(torch.equal(a, p) for a, p in zip(before, gan.discriminator.parameters(), strict=True))
    assert not gan.optimizer.state  # Adam moments untouched too
    # a finite step still learns, and the count travels with the state
    gan.discriminator_step(real, torch.rand(2, 1, S, S), step=1)
    assert gan.skipped_steps == 1 and gan.last_rows == 2
    assert any(not torch.equal(a, p) for a, p in zip(before, gan.discriminator.parameters(), strict=True))
    other = _gan()
    other.load_state_dict(gan.state_dict())
    assert other.skipped_steps == 1


def test_nonfinite_discriminator_state_is_repaired_on_load() -> None:
    gan = _gan()
    gan.discriminator_step(torch.rand(2, 1, S, S), torch.rand(2, 1, S, S), step=0)
    assert not gan.repair_nonfinite()
    state = gan.state_dict()
    key = next(k for k in state if k.endswith("weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    fresh = _gan()
    fresh.load_state_dict(state)
    assert fresh.repair_nonfinite()
    assert all(bool(torch.isfinite(p).all()) for p in fresh.discriminator.parameters())
    assert not fresh.optimizer.state
    fresh.discriminator_step(torch.rand(2, 1, S, S), torch.rand(2, 1, S, S), step=1)
    assert all(bool(torch.isfinite(p).all()) for p in fresh.discriminator.parameters())


# ----------------------------------------------------------------------------- collectives


def test_discriminator_step_is_called_even_without_active_rows() -> None:
    x = _inputs()
    gan = _gan()
    # the gate is closed for every row (t = 0.5 > t_max): no row to learn from on this process
    stack = LossStack([LossTerm("gan", gan, weight=0.1, gate=HardGate(0.1))], dead_after=None)
    calls: list[int] = []
    original = gan.discriminator_step

    def spy(real: torch.Tensor, fake: torch.Tensor, step: int | None = None) -> dict[str, float]:
        calls.append(real.shape[0] + fake.shape[0])
        return original(real, fake, step=step)

    gan.discriminator_step = spy  # type: ignore[method-assign]
    before = [p.detach().clone() for p in gan.discriminator.parameters()]
    stack(z0_hat=x["z0_hat"], t=x["t"], step=0, decode=_decode, hr=x["hr"])
    stack.discriminator_step(0)
    assert calls == [0]  # called (a multi-process run's all-reduce needs every process), with no rows
    assert all(torch.equal(a, p) for a, p in zip(before, gan.discriminator.parameters(), strict=True))


# ----------------------------------------------------------------------------- GAN warm-up


def test_discriminator_trains_during_warmup_while_the_generator_weight_is_0() -> None:
    x = _inputs()
    gan = _gan(warmup=5)
    diffusion = torch.rand(B, requires_grad=True)
    stack = LossStack([LossTerm("gan", gan, weight=0.0)], dead_after=None)
    before = [p.detach().clone() for p in gan.discriminator.parameters()]
    total, report = stack(z0_hat=x["z0_hat"], t=x["t"], step=0, decode=_decode, hr=x["hr"], diffusion=diffusion)
    assert torch.isclose(total, diffusion.mean())  # the generator side contributes nothing
    assert report.to_dict()["terms"]["gan"]["weighted"] == 0.0
    stack.discriminator_step(0)
    assert gan.last_rows == B
    assert any(not torch.equal(a, p) for a, p in zip(before, gan.discriminator.parameters(), strict=True))
