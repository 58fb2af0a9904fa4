"""The loss stack: one shared decode, batch normalisation, gates, pairing, masks, policies, adaptive
weights, GAN hooks and the probe.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.losses import (
    Adaptive,
    Constant,
    DeadTermError,
    HardGate,
    LatentL1Loss,
    LinearGate,
    LossStack,
    LossTerm,
    NonFiniteError,
    TermReport,
)
from tests.losses._helpers import DT, B, CountingDecode, FakeGAN, Recorder, _inputs, batch, l1_rows


class OneMinusCorr(nn.Module):
    """An SSIM-like term: 1 - per-sample correlation."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        p = pred.flatten(1) - pred.flatten(1).mean(1, keepdim=True)
        q = target.flatten(1) - target.flatten(1).mean(1, keepdim=True)
        return 1 - (p * q).sum(1) / (p.norm(dim=1) * q.norm(dim=1) + 1e-12)


class SpectrumTerm(nn.Module):
    """An FFL-like term: mean squared spectral error."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        diff = torch.fft.fft2(pred, norm="ortho") - torch.fft.fft2(target, norm="ortho")
        return diff.abs().pow(2).flatten(1).mean(1)


class GradTerm(nn.Module):
    """An edge-like term: L1 of horizontal differences."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return (pred.diff(dim=-1) - target.diff(dim=-1)).abs().flatten(1).mean(1)


class FeatureTerm(nn.Module):
    """An LPIPS-like term: L2 between features of a frozen random conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1).to(DT).requires_grad_(False)
        g = torch.Generator().manual_seed(0)  # the same frozen "backbone" in every instance
        self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g, dtype=DT))

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return (self.conv(pred) - self.conv(target)).pow(2).flatten(1).mean(1)


# ----------------------------------------------------------------------------- one decode


def five_terms(gate=None) -> list[LossTerm]:
    return [
        LossTerm("l1", Recorder(), gate=gate),
        LossTerm("ssim", OneMinusCorr(), gate=gate),
        LossTerm("lpips", FeatureTerm(), gate=gate),
        LossTerm("ffl", SpectrumTerm(), gate=gate),
        LossTerm("edge", GradTerm(), gate=gate),
    ]


def test_five_pixel_terms_share_exactly_one_decode() -> None:
    d = batch()
    decode = CountingDecode()
    stack = LossStack(five_terms())
    total, report = stack(z0_hat=d["z0_hat"], t=torch.full((4,), 0.5), step=0, decode=decode, hr=d["hr"])
    assert decode.calls == 1
    assert decode.indices == [[0, 1, 2, 3]]
    assert report.decode_calls == 1 and report.decoded_rows == 4
    assert all(report.terms[k].raw > 0 for k in ("l1", "ssim", "lpips", "ffl", "edge"))
    (grad,) = torch.autograd.grad(total, d["z0_hat"])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_everything_gated_off_means_no_decode() -> None:
    d = batch()
    decode = CountingDecode()
    stack = LossStack(five_terms(gate=LinearGate(0.3)))
    t = torch.tensor([0.3, 0.5, 0.9, 1.0])  # every row at or above t_max: gate 0
    diffusion = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT, requires_grad=True)
    total, report = stack(z0_hat=d["z0_hat"], t=t, step=0, decode=decode, hr=d["hr"], diffusion=diffusion)
    assert decode.calls == 0 and report.decode_calls == 0 and report.decoded_rows == 0
    assert total.item() == pytest.approx(2.5)  # only the diffusion mean
    for k in ("l1", "ssim", "lpips", "ffl", "edge"):
        assert report.terms[k] == TermReport(raw=0.0, weighted=0.0, weight=1.0, active_fraction=0.0)


def test_only_rows_that_need_pixels_are_decoded() -> None:
    d = batch()
    decode = CountingDecode()
    narrow, wide = Recorder(), Recorder()
    stack = LossStack([
        LossTerm("narrow", narrow, gate=LinearGate(0.3)),
        LossTerm("wide", wide, gate=HardGate(0.6)),
        LossTerm("latent", LatentL1Loss(), space="latent"),
    ])
    t = torch.tensor([0.1, 0.5, 0.2, 0.9])
    stack(z0_hat=d["z0_hat"], t=t, step=0, decode=decode, hr=d["hr"], z0=d["z0"])
    assert decode.indices == [[0, 1, 2]]  # union of t < 0.3 and t <= 0.6; row 3 is never decoded
    x0 = ((d["z0_hat"] + 1) / 2).detach()
    torch.testing.assert_close(narrow.calls[0]["pred"], x0[[0, 2]])
    torch.testing.assert_close(narrow.calls[0]["target"], d["hr"][[0, 2]])
    torch.testing.assert_close(wide.calls[0]["pred"], x0[[0, 1, 2]])


def test_latent_only_stack_never_decodes() -> None:
    d = batch()
    stack = LossStack([LossTerm("latent_l1", LatentL1Loss(), space="latent")])
    assert not stack.needs_decoder
    total, report = stack(z0_hat=d["z0_hat"], t=torch.zeros(4), step=0, z0=d["z0"])
    expected = np.abs(d["z0_hat"].detach().numpy() - d["z0"].numpy()).mean()
    assert total.item() == pytest.approx(expected, rel=1e-12)
    assert report.decode_calls == 0


def test_decode_chunks_equal_one_decode() -> None:
    d = batch(b=5)
    t = torch.tensor([0.0, 0.1, 0.7, 0.2, 0.25])
    results = []
    for chunk in (None, 2):
        decode = CountingDecode()
        stack = LossStack(five_terms(gate=LinearGate(0.3)), decode_chunk=chunk)
        total, report = stack(z0_hat=d["z0_hat"], t=t, step=0, decode=decode, hr=d["hr"])
        (grad,) = torch.autograd.grad(total, d["z0_hat"])
        results.append((total.detach(), grad, report.to_dict()["terms"], decode.indices))
    (t1, g1, r1, idx1), (t2, g2, r2, idx2) = results
    assert idx1 == [[0, 1, 3, 4]]
    assert idx2 == [[0, 1], [3, 4]]  # rows 0, 1, 3, 4 in chunks of 2; row 2 (t = 0.7) skipped
    torch.testing.assert_close(t1, t2, rtol=0, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)
    for k in r1:
        assert r1[k]["weighted"] == pytest.approx(r2[k]["weighted"], abs=1e-12)


# ----------------------------------------------------------------------------- normalisation


def test_gated_term_normalised_by_whole_batch() -> None:
    d = batch(b=5)
    t = torch.tensor([0.0, 0.06, 0.15, 0.6, 0.45], dtype=DT)
    stack = LossStack([LossTerm("l1", Recorder(), weight=0.05, gate=LinearGate(0.3))])
    total, report = stack(z0_hat=d["z0_hat"], t=t, step=0, decode=CountingDecode(), hr=d["hr"])
    loss = l1_rows((d["z0_hat"] + 1) / 2, d["hr"])
    gate = np.clip((0.3 - t.numpy()) / 0.3, 0, 1)  # [1, 0.8, 0.5, 0, 0]
    expected = (0.05 * gate * loss).sum() / 5  # by the whole batch B = 5, not the 3 active rows
    assert total.item() == pytest.approx(expected, rel=1e-12)
    r = report.terms["l1"]
    assert r.weighted == pytest.approx(expected, rel=1e-12)
    assert r.active_fraction == pytest.approx(3 / 5)
    assert r.raw == pytest.approx(loss[:3].mean(), rel=1e-12)  # mean over the active rows
    assert r.weight == 0.05


def test_paired_only_excludes_unpaired_rows() -> None:
    d = batch()
    strict, lenient = Recorder(), Recorder()
    stack = LossStack([
        LossTerm("strict", strict, paired_only=True),
        LossTerm("lenient", lenient, paired_only=False),
    ])
    paired = torch.tensor([True, False, True, False])
    total, report = stack(z0_hat=d["z0_hat"], t=torch.zeros(4), step=0, decode=CountingDecode(),
                          hr=d["hr"], paired=paired)
    assert strict.calls[0]["pred"].shape[0] == 2
    torch.testing.assert_close(strict.calls[0]["target"], d["hr"][[0, 2]])
    assert lenient.calls[0]["pred"].shape[0] == 4
    loss = l1_rows((d["z0_hat"] + 1) / 2, d["hr"])
    assert report.terms["strict"].weighted == pytest.approx(loss[[0, 2]].sum() / 4, rel=1e-12)
    assert report.terms["strict"].active_fraction == 0.5
    assert total.item() == pytest.approx(loss[[0, 2]].sum() / 4 + loss.mean(), rel=1e-12)


def test_mask_reaches_the_term_on_its_rows() -> None:
    d = batch()
    rec = Recorder()
    stack = LossStack([LossTerm("l1", rec, gate=HardGate(0.5))])
    mask = torch.ones(4, 1, 8, 8, dtype=DT)
    mask[1, :, 4:] = 0
    mask[2, :, :, 6:] = 0
    t = torch.tensor([0.9, 0.1, 0.2, 0.8])
    stack(z0_hat=d["z0_hat"], t=t, step=0, decode=CountingDecode(), hr=d["hr"], mask=mask)
    torch.testing.assert_close(rec.calls[0]["mask"], mask[[1, 2]])


# ----------------------------------------------------------------------------- errors and policies


def test_pixel_term_without_decoder_fails_before_any_compute() -> None:
    d = batch()
    rec = Recorder()
    stack = LossStack([LossTerm("ssim", rec)])
    assert stack.needs_decoder
    with pytest.raises(ConfigError, match="term 'ssim' needs pixel space but the stack got no decoder"):
        stack(z0_hat=d["z0_hat"], t=torch.zeros(4), step=0, hr=d["hr"])
    assert rec.calls == []


def test_term_must_return_per_sample_loss() -> None:
    d = batch()
    stack = LossStack([LossTerm("mean", lambda p, t, m: (p - t).abs().mean())])
    with pytest.raises(ValueError, match=r"'mean' returned \(\); expected the per-sample loss \(4,\)"):
        stack(z0_hat=d["z0_hat"], t=torch.zeros(4), step=0, decode=CountingDecode(), hr=d["hr"])


def test_reserved_and_duplicate_keys() -> None:
    with pytest.raises(ConfigError, match="diffusion"):
        LossTerm("diffusion", Recorder())
    with pytest.raises(ConfigError, match="duplicate"):
        LossStack([LossTerm("a", Recorder()), LossTerm("a", Recorder())])


def nan_row(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    loss = (pred - target).abs().flatten(1).mean(1)
    return torch.where(torch.arange(pred.shape[0]) == 1, torch.full_like(loss, math.nan), loss)


def test_nonfinite_skip_term() -> None:
    d = batch()
    stack = LossStack([LossTerm("bad", nan_row), LossTerm("good", Recorder())], nonfinite_policy="skip_term")
    total, report = stack(z0_hat=d["z0_hat"], t=torch.zeros(4), step=0, decode=CountingDecode(), hr=d["hr"])
    loss = l1_rows((d["z0_hat"] + 1) / 2, d["hr"])
    assert total.item() == pytest.approx(loss.mean(), rel=1e-12)  # 'bad' dropped
    assert report.terms["bad"].skipped and report.terms["bad"].weighted == 0.0
    assert math.isnan(report.terms["bad"].raw)
    assert not report.terms["good"].skipped
    assert report.nonfinite == 1 and not report.skip_step
    (grad,) = torch.autograd.grad(total, d["z0_hat"])
    assert torch.isfinite(grad).all()


def test_nonfinite_skip_step_and_stop() -> None:
    d = batch()
    kw = dict(z0_hat=d["z0_hat"], t=torch.zeros(4), step=3, decode=CountingDecode(), hr=d["hr"])
    _, report = LossStack([LossTerm("bad", nan_row)], nonfinite_policy="skip_step")(**kw)
    assert report.skip_step and report.nonfinite == 1
    with pytest.raises(NonFiniteError, match="'bad'|bad.*step 3"):
        LossStack([LossTerm("bad", nan_row)], nonfinite_policy="stop")(**kw)


def test_nonfinite_consecutive_limit_and_reset() -> None:
    d = batch()
    state = {"bad": True}

    def flaky(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        loss = (pred - target).abs().flatten(1).mean(1)
        return loss * math.inf if state["bad"] else loss

    stack = LossStack([LossTerm("flaky", flaky)], max_consecutive=3)
    kw = dict(z0_hat=d["z0_hat"], t=torch.zeros(4), decode=CountingDecode(), hr=d["hr"])
    stack(step=0, **kw)
    stack(step=1, **kw)
    state["bad"] = False
    stack(step=2, **kw)  # a good step resets the count
    state["bad"] = True
    stack(step=3, **kw)
    stack(step=4, **kw)
    with pytest.raises(NonFiniteError, match="3 consecutive"):
        stack(step=5, **kw)


def test_dead_term_detected() -> None:
    d = batch()

    def never_computed(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return torch.zeros(pred.shape[0], dtype=pred.dtype)  # seed 003: initialised, never assigned

    stack = LossStack([
        LossTerm("edge", never_computed, gate=HardGate(0.5)),
        LossTerm("l1", Recorder()),
    ], dead_after=5)
    kw = dict(z0_hat=d["z0_hat"], decode=CountingDecode(), hr=d["hr"])
    for step in range(4):
        stack(t=torch.zeros(4), step=step, **kw)
    assert stack.dead_counts["edge"] == 4 and stack.dead_counts["l1"] == 0
    stack(t=torch.ones(4), step=4, **kw)  # gated off: not evidence either way
    assert stack.dead_counts["edge"] == 4
    with pytest.raises(DeadTermError, match="'edge' was active for 5 consecutive steps"):
        stack(t=torch.zeros(4), step=5, **kw)


def test_report_only_leaves_the_training_state_as_it_was() -> None:
    """Validation reports a batch without moving the NaN/Inf streak, the dead-term count or the step."""
    d = batch()
    state = {"bad": True}

    def flaky(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        loss = (pred - target).abs().flatten(1).mean(1)
        return loss * math.inf if state["bad"] else loss

    def zero(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return torch.zeros(pred.shape[0], dtype=pred.dtype)

    stack = LossStack([LossTerm("flaky", flaky), LossTerm("zero", zero)], max_consecutive=2, dead_after=3)
    kw = dict(z0_hat=d["z0_hat"], t=torch.zeros(4), decode=CountingDecode(), hr=d["hr"])
    stack(step=7, **kw)  # one bad step, 'zero' dead once
    for _ in range(3):  # would stop training (2 bad in a row) and flag 'zero' (3 zeros), were they training steps
        report = stack.report_only(step=8, **kw)
    assert report.terms["flaky"].skipped and report.terms["zero"].raw == 0.0
    assert stack.dead_counts["zero"] == 1 and stack._step == 7
    state["bad"] = False
    _, report = stack(step=8, **kw)  # the streak was 1, not 4; 'zero' has 2 zeros, not 5: this step trains
    assert not report.terms["flaky"].skipped and stack.dead_counts["zero"] == 2


def test_dead_tracking_waits_for_warmup_and_can_be_disabled() -> None:
    d = batch()

    class WarmingUp(nn.Module):
        warmup = 10

        def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
            return torch.zeros(pred.shape[0], dtype=pred.dtype)

    kw = dict(z0_hat=d["z0_hat"], t=torch.zeros(4), decode=CountingDecode(), hr=d["hr"])
    stack = LossStack([LossTerm("gan", WarmingUp())], dead_after=3)
    for step in range(10):
        stack(step=step, **kw)  # inside the warm-up: zeros are expected
    off = LossStack([LossTerm("x", WarmingUp())], dead_after=None)
    for step in range(20, 30):
        off(step=step, **kw)
    with pytest.raises(DeadTermError):
        for step in range(10, 13):
            stack(step=step, **kw)


# ----------------------------------------------------------------------------- adaptive weight


def test_adaptive_weight_is_the_gradient_norm_ratio() -> None:
    """Linear model z = x W^T: gradients of mean((z-z0)^2) and mean|z-z0| at W by hand."""
    g = torch.Generator().manual_seed(1)
    b, n_in, n_out = 6, 5, 3
    x = torch.randn(b, n_in, generator=g, dtype=DT)
    z0 = torch.randn(b, n_out, generator=g, dtype=DT)
    lin = nn.Linear(n_in, n_out, bias=False).to(DT)
    z0_hat = lin(x).view(b, n_out, 1, 1)
    diffusion = (z0_hat - z0.view(b, n_out, 1, 1)).pow(2).flatten(1).mean(1)
    stack = LossStack([LossTerm("latent", LatentL1Loss(), space="latent", weight=Adaptive(Constant(0.5)))])
    total, report = stack(z0_hat=z0_hat, t=torch.zeros(b), step=0, z0=z0.view(b, n_out, 1, 1),
                          diffusion=diffusion, last_layer=lin.weight)
    w = lin.weight.detach().numpy()
    xn, zn = x.numpy(), z0.numpy()
    err = xn @ w.T - zn
    g_ref = 2 / (b * n_out) * err.T @ xn  # d mean(err^2) / dW
    g_term = 1 / (b * n_out) * np.sign(err).T @ xn  # d mean|err| / dW
    ratio = np.linalg.norm(g_ref) / (np.linalg.norm(g_term) + 1e-4)
    assert report.terms["latent"].weight == pytest.approx(0.5 * ratio, rel=1e-10)
    expected_total = (err**2).mean() + 0.5 * ratio * np.abs(err).mean()
    assert total.item() == pytest.approx(expected_total, rel=1e-10)
    # the ratio is detached: d total / dW = g_ref + 0.5 * ratio * g_term
    total.backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), g_ref + 0.5 * ratio * g_term, rtol=1e-10)


def test_adaptive_ratio_clamped_and_needs_last_layer() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, generator=g, dtype=DT)
    lin = nn.Linear(3, 2, bias=False).to(DT)
    z0 = torch.randn(4, 2, 1, 1, generator=g, dtype=DT)
    z0_hat = lin(x).view(4, 2, 1, 1)
    diffusion = (z0_hat - z0).pow(2).flatten(1).mean(1) * 1e6  # a huge reference gradient
    term = LossTerm("latent", LatentL1Loss(), space="latent", weight=Adaptive(Constant(2.0), max_ratio=0.01))
    stack = LossStack([term])
    _, report = stack(z0_hat=z0_hat, t=torch.zeros(4), step=0, z0=z0, diffusion=diffusion,
                      last_layer=lin.weight)
    assert report.terms["latent"].weight == pytest.approx(2.0 * 0.01)
    with pytest.raises(ConfigError, match="adaptive weight but the stack got no last_layer"):
        stack(z0_hat=z0_hat, t=torch.zeros(4), step=0, z0=z0, diffusion=diffusion)


def test_gan_hooks_use_the_cached_decode() -> None:
    d = batch()
    gan = FakeGAN()
    decode = CountingDecode()
    stack = LossStack([LossTerm("gan", gan, gate=HardGate(0.5)), LossTerm("l1", Recorder())])
    t = torch.tensor([0.1, 0.9, 0.2, 0.3])
    stack(z0_hat=d["z0_hat"], t=t, step=7, decode=decode, hr=d["hr"])
    assert gan.steps == [7]
    assert stack.discriminator_step(7) == {"gan/d_loss": 0.5}
    real, fake, step = gan.d_calls[0]
    assert step == 7 and decode.calls == 1
    torch.testing.assert_close(real, d["hr"][[0, 2, 3]])
    torch.testing.assert_close(fake, ((d["z0_hat"] + 1) / 2)[[0, 2, 3]].detach())
    assert not fake.requires_grad
    assert stack.discriminator_step(8) == {}  # the cache is cleared after a step
    keys = stack.state_dict().keys()
    assert "term_modules.gan.disc.weight" in keys


# ----------------------------------------------------------------------------- probe


def test_term_losses_forces_every_term_open() -> None:
    d = batch()
    stack = LossStack([
        LossTerm("gated", Recorder(), gate=LinearGate(0.01), weight=0.0, paired_only=True),
        LossTerm("latent", LatentL1Loss(), space="latent", weight=Constant(0.0)),
    ])
    losses = stack.term_losses(z0_hat=d["z0_hat"], t=torch.ones(4), decode=CountingDecode(), hr=d["hr"],
                               z0=d["z0"], paired=torch.zeros(4, dtype=torch.bool),
                               diffusion=torch.ones(4, dtype=DT))
    assert set(losses) == {"diffusion", "gated", "latent"}
    assert losses["gated"].item() == pytest.approx(l1_rows((d["z0_hat"] + 1) / 2, d["hr"]).mean(), rel=1e-12)
    assert losses["gated"].requires_grad and losses["latent"].requires_grad


def test_stack_introspection() -> None:
    stack = LossStack([LossTerm("a", Recorder()), LossTerm("b", LatentL1Loss(), space="latent")])
    assert stack.keys == ["a", "b"] and len(stack) == 2 and stack.needs_decoder
    assert "a: space=pixel" in repr(stack)


# ----------------------------------------------------------------------------- unpaired rows and the diffusion term


def test_unpaired_rows_get_no_diffusion_loss() -> None:
    x = _inputs()
    diffusion = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    paired = torch.tensor([True, False, True, False])
    stack = LossStack([])
    total, report = stack(z0_hat=x["z0_hat"], t=x["t"], step=0, diffusion=diffusion, paired=paired)
    assert torch.isclose(total, torch.tensor((1.0 + 3.0) / B))  # normalised by the whole batch
    total.backward()
    assert diffusion.grad.tolist() == [0.25, 0.0, 0.25, 0.0]
    d = report.to_dict()["terms"]["diffusion"]
    assert abs(d["active_fraction"] - 0.5) < 1e-6 and abs(d["raw"] - 2.0) < 1e-6
    # all paired (or no pairing given): unchanged
    total, _ = LossStack([])(z0_hat=x["z0_hat"], t=x["t"], step=0, diffusion=diffusion.detach())
    assert torch.isclose(total, torch.tensor(2.5))
