"""The exact tiler's cache between passes (nets/tile_cache.py): one forward per tile, same result.

Reference: the same tiled evaluation without the cache (every pass recomputed from the input),
which must agree bit for bit, and the whole-image forward (within the exact-tiling tolerance).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffsr.nets.baselines import build_baseline
from diffsr.nets.exact_tiling import ExactTiler, TiledUNet
from diffsr.nets.tile_cache import TileCache
from diffsr.nets.unet import UNet
from tests.nets._helpers import wake

TOL = 1e-4


def _count_forwards(net: nn.Module) -> list[int]:
    """Counts calls of the net's first convolution: one per tile forward that computes."""
    calls = [0]
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    conv = first._conv_forward

    def counted(*args: Tensor) -> Tensor:
        calls[0] += 1
        return conv(*args)

    first._conv_forward = counted  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("attention", [(), (1,)])
def test_cached_tiles_equal_uncached_tiles_and_the_whole_image(attention: tuple[int, ...]) -> None:
    net = wake(UNet(2, 2, 2, width=8, channel_mult=(1, 2), attention_levels=attention))
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(2, 2, 54, 47, generator=g), torch.randn(2, 2, 54, 47, generator=g)
    t = torch.tensor([250.0, 800.0])
    calls = _count_forwards(net)
    with torch.no_grad():
        whole = net(x, t, cond)
        plain = TiledUNet(net, tile=76, cache=0)  # halo 26, core 24: 3 x 2 tiles
        cached = TiledUNet(net, tile=76, cache=2**30)
        plain.prepare(2)
        cached.prepare(2)
        calls[0] = 0
        out_plain = plain(x, t, cond)
        plain_calls, calls[0] = calls[0], 0
        out_cached = cached(x, t, cond)
    tiles = len(cached.tiler.plan(54, 48))
    layers = len(cached.tiler.order or [])
    assert tiles == 6 and layers > 4
    assert torch.equal(out_cached, out_plain)
    assert float((out_cached - whole).abs().max()) < TOL
    # without the cache in_conv runs once per tile and pass (+ one call naming the layers);
    # with it once per tile
    assert plain_calls == tiles * (layers + 1) + 1
    assert calls[0] == tiles + 1
    assert cached.tiler.cache.peak > 0 and cached.tiler.cache.retries == 0


def test_outputs_nothing_refers_to_are_kept_as_shapes_only() -> None:
    net = wake(UNet(2, 2, 2, width=8, channel_mult=(1, 2)))
    x, cond, t = torch.randn(1, 2, 64, 64), torch.randn(1, 2, 64, 64), torch.tensor([500.0])
    peaks = []
    with torch.no_grad():
        outs = []
        for prune in (True, False):
            tiled = TiledUNet(net, tile=76, cache=2**30)
            tiled.tiler.cache.prune = prune
            outs.append(tiled(x, t, cond))
            peaks.append(tiled.tiler.cache.peak)
    assert torch.equal(outs[0], outs[1])
    assert peaks[0] < 0.75 * peaks[1]  # in_conv, GroupNorm outputs, consumed skips: dropped


def test_a_small_budget_caches_some_tiles_and_changes_nothing() -> None:
    net = wake(UNet(2, 2, 2, width=8, channel_mult=(1, 2)))
    x, cond, t = torch.randn(1, 2, 72, 72), torch.randn(1, 2, 72, 72), torch.tensor([500.0])
    with torch.no_grad():
        full = TiledUNet(net, tile=76, cache=2**30)
        reference = full(x, t, cond)
        small = TiledUNet(net, tile=76, cache=full.tiler.cache.peak // 3)
        out = small(x, t, cond)
    cache = small.tiler.cache
    tiles = len(small.tiler.plan(72, 72))
    assert 0 < len(cache.dropped) < tiles
    assert cache.peak <= cache.budget
    assert torch.equal(out, reference)


class _KeepsADerivedValue(nn.Module):
    """A GroupNorm net whose forward keeps ``silu(conv(x))`` in a variable across a later GroupNorm
    (the conv output itself is then referenced by nothing), and updates a tensor in place."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 8, 3, padding=1)
        self.n1 = nn.GroupNorm(2, 8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.n2 = nn.GroupNorm(2, 8)
        self.c = nn.Conv2d(8, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        kept = F.silu(self.a(x))  # derived from a module output nobody holds at the next stop
        h = self.relu(self.b(self.n1(kept)))  # in place on b's output
        h = self.n2(h)
        h = h + kept  # used after the stops
        return self.c(h)


def test_a_value_derived_from_a_dropped_output_triggers_a_recompute_not_a_wrong_result() -> None:
    net = wake(_KeepsADerivedValue())
    x = torch.randn(1, 2, 40, 40, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = net(x)
        tiler = ExactTiler(net, lambda n, a: n(a), tile=24, cache=2**30)
        tiled = tiler(x)
        plain = ExactTiler(net, lambda n, a: n(a), tile=24, cache=0)(x)
    assert torch.equal(tiled, plain)
    assert float((tiled - whole).abs().max()) < TOL
    assert tiler.cache.retries == 1 and not tiler.cache.prune  # learned once: keep every output


def test_rcan_channel_attention_pools_tile_exactly_with_the_cache() -> None:
    net = build_baseline("rcan", channels=1, scale=2, size="tiny").eval()
    lr = torch.rand(1, 1, 36, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = net(lr)
        tiler = ExactTiler(net, lambda n, x: n(x), tile=40, scale=2, cache=2**30)
        tiled = tiler(lr)
        plain = ExactTiler(net, lambda n, x: n(x), tile=40, scale=2, cache=0)(lr)
    assert len(tiler.plan(36, 30)) > 1
    assert torch.equal(tiled, plain)
    assert float((tiled - whole).abs().max()) < TOL
    assert tiler.cache.peak > 0


def test_the_cache_restores_the_modules() -> None:
    net = UNet(2, 2, 2, width=16, channel_mult=(1, 2))
    cache = TileCache(net, (lambda: 0, lambda n: None), 2**20, stop=RuntimeError)
    with cache.patched():
        assert "forward" in net.in_conv.__dict__
    assert not any("forward" in m.__dict__ for m in net.modules())
