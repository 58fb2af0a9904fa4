"""The conditional UNet: shapes, zero-initialised head, t/cond dependence, gradients, presets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffsr.config import NetConfig
from diffsr.core.errors import ConfigError
from diffsr.nets import NETS, UNet, build_net, norm_groups, timestep_embedding
from diffsr.nets.unet import Attention


def perturb_out_conv(net: UNet, seed: int = 0) -> None:
    """Give the zero-initialised head random weights, as after some training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.out_conv.weight.copy_(0.1 * torch.randn(net.out_conv.weight.shape, generator=g))
        net.out_conv.bias.copy_(0.1 * torch.randn(net.out_conv.bias.shape, generator=g))


def inputs(b: int, c: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, h, w, generator=g),
        torch.rand(b, generator=g) * 1000,
        torch.randn(b, c, h, w, generator=g),
    )


@pytest.mark.parametrize("channels", [1, 3, 12, 16, 48])
@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (30, 30), (5, 3)])
def test_output_shape_any_size(channels: int, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = UNet(channels, channels, channels, size="tiny")  # 3 levels: sizes are padded to x4
    perturb_out_conv(net)
    x, t, cond = inputs(2, channels, *hw)
    out = net(x, t, cond)
    assert out.shape == (2, channels, *hw)
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_in_out_channels_may_differ() -> None:
    net = UNet(4, 2, 7, width=16, channel_mult=(1, 2))
    out = net(torch.randn(1, 4, 9, 9), torch.tensor([3.0]), torch.randn(1, 2, 9, 9))
    assert out.shape == (1, 7, 9, 9)


def test_zero_initialised_head_gives_zero_output() -> None:
    torch.manual_seed(0)
    net = UNet(16, 16, 16)
    assert isinstance(net.out_conv, nn.Conv2d)
    out = net(*inputs(2, 16, 16, 16))
    assert torch.count_nonzero(out) == 0


def test_out_conv_is_the_last_layer() -> None:
    # with out_conv at zero no gradient can reach any earlier layer; once it is non-zero it does
    torch.manual_seed(0)
    net = UNet(3, 3, 3)
    x, t, cond = inputs(2, 3, 16, 16)
    net(x, t, cond).square().sum().backward()
    assert net.in_conv.weight.grad is not None and torch.count_nonzero(net.in_conv.weight.grad) == 0
    net.zero_grad()
    perturb_out_conv(net)
    net(x, t, cond).square().sum().backward()
    grad = net.in_conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    time_grad = net.time_embed[0].weight.grad
    assert time_grad is not None and time_grad.abs().sum() > 0


def test_output_depends_on_t_and_cond() -> None:
    torch.manual_seed(0)
    net = UNet(16, 16, 16).eval()
    perturb_out_conv(net)
    x, _, cond = inputs(2, 16, 16, 16)
    t_a, t_b = torch.full((2,), 10.0), torch.full((2,), 600.0)
    out_a = net(x, t_a, cond)
    assert torch.equal(out_a, net(x, t_a, cond))  # deterministic in eval
    assert (out_a - net(x, t_b, cond)).abs().max() > 1e-3
    assert (out_a - net(x, t_a, torch.randn_like(cond))).abs().max() > 1e-3
    assert (out_a - net(torch.randn_like(x), t_a, cond)).abs().max() > 1e-3


def test_scalar_t_broadcasts_and_bad_shapes_say_what_arrived() -> None:
    net = UNet(2, 2, 2, width=16, channel_mult=(1, 2)).eval()
    perturb_out_conv(net)
    x, cond = torch.randn(3, 2, 8, 8), torch.randn(3, 2, 8, 8)
    assert torch.equal(net(x, torch.tensor(5.0), cond), net(x, torch.full((3,), 5.0), cond))
    with pytest.raises(ValueError, match=r"cond: expected \(3, 2, 8, 8\), got \(3, 1, 8, 8\)"):
        net(x, torch.full((3,), 5.0), cond[:, :1])
    with pytest.raises(ValueError, match=r"t: expected \(3,\)"):
        net(x, torch.zeros(2), cond)


def test_timestep_embedding_matches_formula() -> None:
    t = torch.tensor([0.0, 1.0, 250.0])
    dim, half = 8, 4
    emb = timestep_embedding(t, dim)
    for i, ti in enumerate(t.tolist()):
        for k in range(half):
            freq = 10000.0 ** (-k / half)
            assert emb[i, k].item() == pytest.approx(math.cos(ti * freq), abs=1e-4)
            assert emb[i, half + k].item() == pytest.approx(math.sin(ti * freq), abs=1e-4)


@pytest.mark.parametrize(("channels", "groups"), [(32, 32), (64, 32), (24, 8), (48, 16), (12, 4), (7, 1)])
def test_norm_groups_divides(channels: int, groups: int) -> None:
    assert norm_groups(channels) == groups
    assert all(c % norm_groups(c) == 0 and norm_groups(c) <= 32 for c in range(1, 300))


@pytest.mark.parametrize("width", [24, 48])
def test_odd_widths_build_and_run(width: int) -> None:
    net = UNet(3, 3, 3, width=width, channel_mult=(1, 2, 3))
    assert net.in_conv.out_channels == width
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    assert net(*inputs(1, 3, 12, 12)).shape == (1, 3, 12, 12)


def test_attention_matches_reference_softmax() -> None:
    # float64 reference: softmax(q k^T / sqrt(d)) v per head, written out by hand
    torch.manual_seed(0)
    attn = Attention(64, head_channels=32).double()
    nn.init.normal_(attn.proj.weight, std=0.1)
    x = torch.randn(2, 64, 3, 5, dtype=torch.float64)
    b, c, h, w = x.shape
    qkv = attn.qkv(attn.norm(x)).reshape(b, 3 * c, h * w)
    q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
    heads, d = 2, 32
    outs = []
    for i in range(heads):
        qi, ki, vi = (m[:, i * d : (i + 1) * d] for m in (q, k, v))  # (B, d, HW)
        weights = torch.softmax(qi.transpose(1, 2) @ ki / math.sqrt(d), dim=-1)  # (B, HW, HW)
        outs.append(vi @ weights.transpose(1, 2))
    expected = x + attn.proj(torch.cat(outs, 1).reshape(b, c, h, w))
    assert attn.heads == 2
    torch.testing.assert_close(attn(x), expected, rtol=1e-10, atol=1e-10)


def test_attention_levels_run_forward_and_backward() -> None:
    torch.manual_seed(0)
    net = UNet(4, 4, 4, width=32, channel_mult=(1, 2, 2), attention_levels=(1, 2))
    n_attn = sum(isinstance(m, Attention) for m in net.modules())
    assert n_attn == 2 + 2 + 1  # down levels 1, 2; up levels 2, 1; middle (level 2 is the lowest)
    perturb_out_conv(net)
    for m in net.modules():
        if isinstance(m, Attention):
            nn.init.normal_(m.proj.weight, std=0.05)
    x, t, cond = inputs(2, 4, 13, 18)
    out = net(x, t, cond)
    out.square().mean().backward()
    first = next(m for m in net.modules() if isinstance(m, Attention))
    assert first.qkv.weight.grad is not None and first.qkv.weight.grad.abs().sum() > 0
    assert out.shape == x.shape


def test_channels_last_gives_the_same_output() -> None:
    torch.manual_seed(0)
    net = UNet(16, 16, 16).eval()
    perturb_out_conv(net)
    x, t, cond = inputs(2, 16, 16, 16)
    expected = net(x, t, cond)
    net_cl = net.to(memory_format=torch.channels_last)
    got = net_cl(x.contiguous(memory_format=torch.channels_last), t, cond.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("size", "low", "high"), [("tiny", 0.3e6, 1.0e6), ("small", 5e6, 10e6), ("base", 30e6, 60e6)])
def test_preset_parameter_counts(size: str, low: float, high: float) -> None:
    with torch.device("meta"):  # no memory, no init time
        net = UNet(16, 16, 16, size=size)  # type: ignore[arg-type]
    assert low <= net.num_parameters() <= high


def test_build_net_applies_config_overrides() -> None:
    cfg = NetConfig(size="small", width=24, channel_mult=[1, 2], num_res_blocks=2, attention_levels=[1])
    with torch.device("meta"):
        net = build_net(cfg, in_channels=5, cond_channels=3, out_channels=5)
    assert isinstance(net, UNet)
    assert net.in_conv.in_channels == 8 and net.in_conv.out_channels == 24
    assert net.out_conv.out_channels == 5
    assert net.channel_mult == (1, 2) and net.num_res_blocks == 2 and net.attention_levels == (1,)
    assert len(net.down[0].res) == 2


def test_registry_names_the_closest_net() -> None:
    assert "unet" in NETS
    with pytest.raises(ConfigError, match="did you mean 'unet'"):
        NETS.build("unte", in_channels=1, cond_channels=1, out_channels=1)


def test_bad_attention_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="attention_levels"):
        UNet(1, 1, 1, channel_mult=(1, 2), attention_levels=(2,))


def test_one_training_step_reduces_loss_on_a_fixed_batch() -> None:
    # the residual target is reachable: a few Adam steps on one batch must lower the loss
    torch.manual_seed(0)
    net = UNet(16, 16, 16)
    x, t, cond = inputs(4, 16, 16, 16)
    target = 0.5 * cond
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = F.mse_loss(net(x, t, cond), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
