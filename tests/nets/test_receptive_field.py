"""The structural receptive-field probe (nets/receptive_field.py) behind exact tiling.

References: hand-derived radii of conv stacks, and the outputs that actually change when a block
of the input changes, for random weights in float64 (whole-image layers made pointwise): the
same reach, measured on the real layers instead of the probe's reduced ones.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from diffsr.nets.baselines import build_baseline
from diffsr.nets.exact_tiling import _Engine
from diffsr.nets.receptive_field import receptive_radius
from diffsr.nets.resnet import ResNetDenoiser
from diffsr.nets.unet import UNet


def _probe(net: nn.Module) -> object:
    return _Engine(net).probing()


def _influence_radius(fn: Callable[..., Tensor], net: nn.Module, channels: list[int], *, size: int, multiple: int,
                      scale: int = 1) -> int:
    """How far a change of a ``multiple``-square block of the input changes the output (float64,
    random weights, whole-image layers pointwise as the tiler sees them between passes), measured
    from the block's far edge as the probe does."""
    net = net.double()
    torch.manual_seed(0)
    for p in net.parameters():  # zero-initialised heads and projections too
        nn.init.normal_(p, std=0.2)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, c, size, size, dtype=torch.float64, generator=g) for c in channels]
    c0 = (size // 2 // multiple) * multiple
    changed = [x.clone() for x in inputs]
    for x in changed:
        x[..., c0 : c0 + multiple, c0 : c0 + multiple] += 1.0
    with torch.no_grad(), _Engine(net).probing():
        diff = (fn(net, *changed) - fn(net, *inputs)).abs().sum((0, 1)) != 0
    ys = diff.any(1).nonzero().flatten() // scale
    xs = diff.any(0).nonzero().flatten() // scale
    assert ys.min() > 0 and ys.max() < size - 1, "reference image too small"
    last = c0 + multiple - 1
    return max(last - int(ys.min()), int(ys.max()) - c0, last - int(xs.min()), int(xs.max()) - c0)


def test_radius_of_a_conv_stack_is_the_sum_of_half_kernels() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                        nn.Conv2d(4, 1, 5, padding=2))
    assert receptive_radius(lambda n, x: n(x), [(1, 1)], multiple=1, net=net) == 1 + 1 + 2
    # a stride-2 layer doubles the reach of what follows it: 1 + 2 * (1 + 1) on the input grid,
    # measured for a 2x2 block of outputs (the phase), so +1
    strided = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, stride=2), nn.Conv2d(4, 4, 3, padding=1),
                            nn.Upsample(scale_factor=2.0), nn.Conv2d(4, 1, 3, padding=1))
    radius = receptive_radius(lambda n, x: n(x), [(1, 1)], multiple=2, net=strided)
    assert 4 <= radius <= 6


def test_radius_of_non_square_dilated_and_transposed_kernels() -> None:
    # rows reach further than columns (5x1 kernel), dilation, a transposed conv and replicate
    # padding: each handled by the reduced convolutions of the probe
    net = nn.Sequential(nn.Conv2d(1, 3, (5, 1), padding=(2, 0)), nn.Conv2d(3, 3, 3, padding=3, dilation=3),
                        nn.Conv2d(3, 2, 3, stride=2, padding=1), nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1),
                        nn.Conv2d(2, 1, 3, padding=1, padding_mode="replicate"))
    radius = receptive_radius(lambda n, x: n(x), [(1, 1)], multiple=2, net=net)
    assert radius == _influence_radius(lambda n, x: n(x), net, [1], size=64, multiple=2)


def test_radius_of_the_resnet_denoiser_is_three_plus_two_per_block() -> None:
    # head conv 1, each block's two 3x3 convs 2, tail 1, output conv 1
    for blocks in (1, 4):
        net = ResNetDenoiser(2, 2, 2, width=8, blocks=blocks)
        radius = receptive_radius(lambda n, x, c: n(x, torch.zeros(x.shape[0]), c), [(3, 2), (3, 2)], multiple=1,
                                  net=net)
        assert radius == 3 + 2 * blocks


@pytest.mark.parametrize("attention", [(), (1,)])
def test_unet_radius_matches_the_gradient_support(attention: tuple[int, ...]) -> None:
    net = UNet(2, 1, 2, width=8, channel_mult=(1, 2, 2), attention_levels=attention).eval()

    def fn(n: nn.Module, x: Tensor, c: Tensor) -> Tensor:
        return n(x, torch.full((x.shape[0],), 300.0, dtype=x.dtype), c)

    radius = receptive_radius(fn, [(4, 2), (4, 1)], multiple=net.multiple, net=net, probe=_probe)
    assert radius == _influence_radius(fn, net, [2, 1], size=128, multiple=net.multiple)


@pytest.mark.parametrize("name", ["edsr", "rcan"])
def test_baseline_radius_matches_the_gradient_support(name: str) -> None:
    net = build_baseline(name, channels=1, scale=2, size="tiny").eval()
    radius = receptive_radius(lambda n, x: n(x), [(1, 1)], multiple=1, scale=2, net=net, probe=_probe)
    assert radius == _influence_radius(lambda n, x: n(x), net, [1], size=64, multiple=1, scale=2)


def test_the_probe_leaves_the_net_untouched() -> None:
    net = UNet(2, 1, 2, width=8, channel_mult=(1, 2)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, c, t = torch.randn(1, 2, 16, 16), torch.randn(1, 1, 16, 16), torch.tensor([10.0])
    with torch.no_grad():
        out_before = net(x, t, c)
        receptive_radius(lambda n, a, b: n(a, torch.zeros(a.shape[0]), b), [(1, 2), (1, 1)], multiple=2, net=net,
                         probe=_probe)
        out_after = net(x, t, c)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert "forward" not in net.in_conv.__dict__  # the reduced convolutions were on the copy only
    assert torch.equal(out_before, out_after)
