"""Exact tiling (sample.tile_mode=exact): tiled evaluation equals the whole-image evaluation.

References: the same net run on the whole image (GroupNorm, attention and pooling on all
pixels), and a hand-derived receptive field for a plain conv stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.config import load_config
from diffsr.core.errors import ConfigError
from diffsr.model import build_model
from diffsr.nets.baselines import build_baseline
from diffsr.nets.exact_tiling import ExactTiler, TiledUNet
from diffsr.nets.unet import UNet
from diffsr.sampling.infer import LoadedModel, super_resolve
from tests.nets._helpers import wake

TOL = 1e-4  # the data issue's bound; measured 1e-7 .. 1e-5 (float32 rounding)


@pytest.mark.parametrize("attention", [(), (1,)])
def test_unet_tiles_equal_the_whole_image(attention: tuple[int, ...]) -> None:
    net = wake(UNet(2, 2, 2, width=16, channel_mult=(1, 2), attention_levels=attention))
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(2, 2, 70, 61, generator=g), torch.randn(2, 2, 70, 61, generator=g)
    t = torch.tensor([250.0, 800.0])
    with torch.no_grad():
        whole = net(x, t, cond)
        tiled_net = TiledUNet(net, tile=64, cache=2**30)  # uncached: tests/nets/test_tile_cache.py
        tiled = tiled_net(x, t, cond)
    halo = tiled_net.tiler.halo
    assert halo is not None and halo > 0
    assert len(tiled_net.tiler.plan(70, 62)) > 4  # really tiled
    err = float((tiled - whole).abs().max())
    print(f"UNet attention={attention}: halo {halo}, max |tiled - whole| {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("name", ["edsr", "rcan"])
def test_baselines_tile_exactly(name: str) -> None:
    net = build_baseline(name, channels=1, scale=2, size="tiny").eval()
    lr = torch.rand(1, 1, 50, 43, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = net(lr)
        tiler = ExactTiler(net, lambda n, x: n(x), tile=60, scale=2)
        tiled = tiler(lr)
    assert len(tiler.plan(50, 43)) > 1
    assert float((tiled - whole).abs().max()) < TOL


def _loaded(preset: str, overrides: list[str]) -> LoadedModel:
    torch.manual_seed(0)
    config = load_config(preset, overrides)
    model = build_model(config)
    wake(model.net)
    return LoadedModel(model, config, Path("mem"), 0, False)


def _lr(h: int, w: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    noise = torch.rand(h, w, generator=torch.Generator().manual_seed(3))
    return (0.5 + 0.3 * torch.sin(7 * x) * torch.cos(5 * y) + 0.05 * noise).clamp(0, 1)[None, None]


@pytest.mark.parametrize("overrides", [
    ["net.width=16", "net.channel_mult=[1,2]"],  # the demo recipe: wavelet codec, flow, 1 step
    ["net.width=16", "net.channel_mult=[1,2]", "sample.steps=3", "sample.consistency=backprojection"],
])
def test_super_resolve_exact_equals_untiled(overrides: list[str]) -> None:
    loaded = _loaded("demo", overrides)
    lr = _lr(72, 78)  # x4: 288 x 312 HR, latent (wavelet level 2) 72 x 78, halo 24
    whole = super_resolve(loaded, lr, tile=0, seed=5)
    exact = super_resolve(loaded, lr, tile=256, seed=5)  # latent tile 64 = core 16 + 2 x 24
    loaded.config.sample.tile_mode = "blend"
    blend = super_resolve(loaded, lr, tile=128, overlap=32, seed=5)
    err = float((exact - whole).abs().max())
    blend_err = float((blend - whole).abs().max())
    print(f"max |exact - whole| {err:.2e}; blend {blend_err:.2e}")
    assert err < TOL
    assert blend_err > TOL  # the set-up does see tiling errors: blend mode is not exact


def test_the_norm_free_resnet_denoiser_tiles_exactly_in_one_pass() -> None:
    loaded = _loaded("demo", ["net.name=resnet", "net.width=8", "net.blocks=3"])
    lr = _lr(40, 36)  # latent 40 x 36; halo 3 + 2 x 3 = 9, tile 36 -> cores of 18: 3 x 2 tiles
    whole = super_resolve(loaded, lr, tile=0, seed=5)
    net = TiledUNet(loaded.model.net, tile=36)
    net.prepare(1)
    calls = [0]
    loaded.model.net.head.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with torch.no_grad():
        z, c = torch.randn(1, 16, 40, 36), torch.randn(1, 16, 40, 36)
        t = torch.tensor([3.0])
        assert float((net(z, t, c) - loaded.model.net(z, t, c)).abs().max()) < TOL
    assert net.tiler.halo == 9 and net.tiler.order == []  # no whole-image layer: one pass
    assert len(net.tiler.plan(40, 36)) == 6
    assert calls[0] == 6 + 1 + 1  # the tiles, naming the (no) whole-image layers, the reference
    exact = super_resolve(loaded, lr, tile=144, seed=5)  # HR pixels: latent tile 36
    assert float((exact - whole).abs().max()) < TOL


def test_exact_tiling_refuses_what_it_cannot_do(caplog: pytest.LogCaptureFixture) -> None:
    loaded = _loaded("demo", ["net.width=16", "net.channel_mult=[1,2]", "sample.tile_mode=exact"])
    lr = _lr(44, 52)
    with pytest.raises(ConfigError, match=r"sample.tile: 16 pixels is too small for exact tiling.*tile >= \d+"):
        super_resolve(loaded, lr, tile=16)
    # auto (the default) blends instead, and says why
    loaded.config.sample.tile_mode = "blend"
    blend = super_resolve(loaded, lr, tile=16, overlap=4)
    loaded.config.sample.tile_mode = "auto"
    with caplog.at_level("WARNING", logger="diffsr.sampling.infer"):
        auto = super_resolve(loaded, lr, tile=16, overlap=4)
    assert torch.equal(auto, blend)
    assert any("too small for exact tiling" in r.getMessage() and "blending" in r.getMessage()
               for r in caplog.records)
    swinir = build_baseline("swinir", channels=1, scale=2, size="tiny")
    with pytest.raises(ConfigError, match="tile_mode=blend"):
        ExactTiler(swinir, lambda n, x: n(x), tile=64, scale=2)


@pytest.mark.parametrize("preset", ["edsr", "rcan"])
def test_super_resolve_baselines_tile_exactly(preset: str) -> None:
    # the net inside the [-1, 1] wrapper is tiled (the wrapper's offset would look global to the probe)
    loaded = _loaded(preset, ["net.size=tiny", "sample.tile_mode=exact"])
    lr = _lr(50, 43)  # LR tile 48 (192 HR px) with halos of 20 (EDSR) / 14 (RCAN): several tiles
    whole = super_resolve(loaded, lr, tile=0)
    exact = super_resolve(loaded, lr, tile=192)
    assert float((exact - whole).abs().max()) < TOL
