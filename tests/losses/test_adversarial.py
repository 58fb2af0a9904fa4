"""PatchGAN discriminator, GAN losses, R1 and the GANLoss module (formulas derived by hand)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from diffsr.losses.adversarial import (
    GANLoss,
    NLayerDiscriminator,
    hinge_d_loss,
    hinge_g_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    r1_penalty,
)


@pytest.mark.parametrize(("layers", "size", "out"), [(3, 64, 6), (2, 64, 14), (3, 70, 6), (1, 32, 14)])
def test_discriminator_output_shape(layers: int, size: int, out: int) -> None:
    # `layers` stride-2 4x4 convs (padding 1) halve the size, then two stride-1 4x4 convs take 1 each
    d = NLayerDiscriminator(3, width=8, layers=layers)
    assert d(torch.rand(2, 3, size, size)).shape == (2, 1, out, out)


def test_receptive_field_is_70_for_three_layers() -> None:
    # hand count for kernels 4: 1 + 3 * (1 + 2 + 4 + 8 + 8) = 70
    assert NLayerDiscriminator.receptive_field(3) == 70
    assert NLayerDiscriminator.receptive_field(2) == 34
    torch.manual_seed(0)
    d = NLayerDiscriminator(1, width=8, layers=3).double()
    # GroupNorm couples positions through its statistics: drop it to see the convolutional field
    for i, m in enumerate(d.model):
        if isinstance(m, nn.GroupNorm):
            d.model[i] = nn.Identity()
    x = torch.rand(1, 1, 160, 160, dtype=torch.float64, requires_grad=True)
    logits = d(x)
    centre = logits.shape[-1] // 2
    logits[0, 0, centre, centre].backward()
    rows = x.grad[0, 0].abs().sum(dim=1).nonzero()
    cols = x.grad[0, 0].abs().sum(dim=0).nonzero()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_loss_formulas_by_hand() -> None:
    real = torch.tensor([[[[2.0, 0.5], [-1.0, 0.0]]]])
    fake = torch.tensor([[[[-2.0, 0.5], [1.0, -0.5]]]])
    # hinge D: mean relu(1 - real) = (0 + 0.5 + 2 + 1) / 4; mean relu(1 + fake) = (0 + 1.5 + 2 + 0.5) / 4
    assert hinge_d_loss(real, fake).item() == pytest.approx(3.5 / 4 + 4.0 / 4)
    assert hinge_g_loss(fake).item() == pytest.approx(-(-2.0 + 0.5 + 1.0 - 0.5) / 4)

    def softplus(v: float) -> float:
        return float(torch.log1p(torch.exp(torch.tensor(v, dtype=torch.float64))))

    d_expected = sum(softplus(-v) for v in [2.0, 0.5, -1.0, 0.0]) / 4
    d_expected += sum(softplus(v) for v in [-2.0, 0.5, 1.0, -0.5]) / 4
    assert nonsaturating_d_loss(real, fake).item() == pytest.approx(d_expected, rel=1e-6)
    g_expected = sum(softplus(-v) for v in [-2.0, 0.5, 1.0, -0.5]) / 4
    assert nonsaturating_g_loss(fake).item() == pytest.approx(g_expected, rel=1e-6)
    # masked generator loss: weights are the valid fraction of each patch (top row valid here)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    assert hinge_g_loss(fake, mask).item() == pytest.approx(-(-2.0 + 0.5) / 2)


def test_r1_equals_hand_computed_gradient_norm() -> None:
    # linear D(x) = <w, x> per sample (one patch): grad = w, R1 = gamma / 2 * ||w||^2
    w = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    real = torch.rand(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    out = (real * w).sum(dim=(1, 2, 3)).view(4, 1, 1, 1)
    r1 = r1_penalty(out, real, gamma=10.0)
    torch.testing.assert_close(r1, torch.full((4,), 5.0 * w.square().sum().item(), dtype=torch.float64))
    # patch map D(x) = x (H x W patches): score = mean(x), grad = 1 / (HW) per pixel,
    # ||grad||^2 = 1 / (HW), R1 = gamma / 2 / (HW)
    real1 = torch.rand(2, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(r1_penalty(real1 * 1.0, real1, gamma=4.0), torch.full((2,), 2.0 / 20,
                                                                                      dtype=torch.float64))
    # quadratic D(x) = sum(x^2): grad = 2x, R1 = gamma / 2 * 4 ||x||^2, and it is differentiable:
    # d R1 / dx = gamma / 2 * 8 x
    real2 = torch.rand(3, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(real2.square().sum(dim=(1, 2, 3)), real2, gamma=2.0)
    torch.testing.assert_close(r1, 4.0 * real2.detach().square().sum(dim=(1, 2, 3)))
    (grad,) = torch.autograd.grad(r1.sum(), real2)
    torch.testing.assert_close(grad, 8.0 * real2.detach())


def _gan(**kwargs: object) -> GANLoss:
    torch.manual_seed(0)
    return GANLoss(1, width=8, layers=2, **kwargs)  # type: ignore[arg-type]


def test_generator_loss_gives_no_grad_to_discriminator() -> None:
    gan = _gan()
    pred = torch.rand(2, 1, 32, 32, requires_grad=True)
    loss = gan(pred, torch.rand(2, 1, 32, 32))
    assert loss.shape == (2,)
    loss.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert all(p.requires_grad for p in gan.discriminator.parameters())  # D still trainable
    # the value is the hinge generator loss of D's logits
    with torch.no_grad():
        torch.testing.assert_close(loss.detach(), -gan.discriminator(pred).mean(dim=(1, 2, 3)))


def test_warmup_returns_connected_zero() -> None:
    gan = _gan(warmup=5)
    pred = torch.rand(2, 1, 32, 32, requires_grad=True)
    gan.set_step(4)
    loss = gan(pred, pred.detach())
    assert loss.shape == (2,) and loss.abs().max() == 0 and loss.grad_fn is not None
    loss.sum().backward()
    assert pred.grad is not None and pred.grad.abs().max() == 0
    gan.set_step(5)
    assert gan(pred, pred.detach()).abs().max() > 0


@pytest.mark.parametrize("loss", ["hinge", "nonsaturating"])
def test_discriminator_step_updates_d(loss: str) -> None:
    gan = _gan(loss=loss, r1_interval=4, lr=1e-3)
    real = torch.rand(4, 1, 32, 32)
    fake = (0.5 + 0.01 * torch.randn(4, 1, 32, 32)).requires_grad_(True)  # smooth: easy to tell apart
    before = [p.detach().clone() for p in gan.discriminator.parameters()]
    stats = gan.discriminator_step(real, fake, step=0)
    assert set(stats) == {"d_loss", "d_real", "d_fake", "r1"}
    assert all(isinstance(v, float) and v == v and abs(v) < 1e6 for v in stats.values())
    assert stats["r1"] > 0  # step 0 is an R1 step
    assert gan.discriminator_step(real, fake, step=1)["r1"] == 0.0
    after = list(gan.discriminator.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert fake.grad is None  # fakes are detached
    # D learns to separate: after some steps real logits exceed fake logits
    for step in range(2, 20):
        stats = gan.discriminator_step(real, fake.detach(), step=step)
    assert stats["d_real"] > stats["d_fake"]


def test_state_dict_round_trip_restores_optimizer_exactly() -> None:
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(4, 1, 32, 32, generator=gen)
    fake = torch.rand(4, 1, 32, 32, generator=gen)
    first = _gan(r1_interval=2, warmup=3)
    for step in range(3):
        first.discriminator_step(real, fake, step=step)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    second = GANLoss(1, width=8, layers=2, r1_interval=2, warmup=3)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    assert second.step == first.step == 2
    state1, state2 = first.optimizer.state_dict(), second.optimizer.state_dict()
    assert state1["param_groups"] == state2["param_groups"]
    for key, s1 in state1["state"].items():
        for name, v in s1.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(state2["state"][key][name])), name
    # the next steps are bit-identical
    for step in (3, 4):
        a = first.discriminator_step(real, fake, step=step)
        b = second.discriminator_step(real, fake, step=step)
        assert a == b
    for p1, p2 in zip(first.discriminator.parameters(), second.discriminator.parameters(), strict=True):
        assert torch.equal(p1, p2)
