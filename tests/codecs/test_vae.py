"""VAECodec on a tiny randomly initialised diffusers AutoencoderKL saved to a temporary folder.

Every expected value is computed directly with diffusers on a second copy of the VAE.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.codecs import VAECodec, build_codec
from diffsr.config import CodecConfig
from diffsr.core import ConfigError

diffusers = pytest.importorskip("diffusers")

SCALE, SHIFT = 0.5, 0.1  # not the defaults, so a forgotten scale or shift shows


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=32,
        scaling_factor=SCALE,
        shift_factor=SHIFT,
    )
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference(vae_dir: Path):
    return diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()


def images(channels: int) -> torch.Tensor:
    return torch.rand(2, channels, 16, 24, generator=torch.Generator().manual_seed(0))


def test_frozen_and_described(vae_dir: Path) -> None:
    codec = VAECodec(str(vae_dir), channels=3)
    assert all(not p.requires_grad for p in codec.parameters())
    codec.train()
    assert not codec.vae.training  # stays in eval mode
    assert codec.downsample == 2 and codec.latent_channels(3) == 4
    assert (codec.scale, codec.shift) == (SCALE, SHIFT)
    assert not codec.is_linear and not codec.is_learned and not codec.is_lossless


@pytest.mark.parametrize("channels", [1, 3])
@torch.no_grad()
def test_encode_decode_match_diffusers(vae_dir: Path, reference, channels: int) -> None:
    codec = VAECodec(str(vae_dir), channels=channels)
    x = images(channels)
    latent = codec.encode(x)
    assert latent.z.shape == (2, 4, 8, 12) and latent.side == {}
    x3 = (2 * x - 1).expand(-1, 3, -1, -1)  # 1-channel images replicated to RGB
    mode = reference.encode(x3).latent_dist.mode()
    torch.testing.assert_close(latent.z, (mode - SHIFT) * SCALE)
    # posterior mode, not a sample: deterministic
    torch.testing.assert_close(codec.encode(x).z, latent.z, atol=0, rtol=0)

    out = reference.decode(latent.z / SCALE + SHIFT).sample
    if channels == 1:
        out = out.mean(dim=1, keepdim=True)
    y = codec.decode(latent)
    assert y.shape == x.shape
    torch.testing.assert_close(y, (out + 1) / 2)


def test_decode_gradient_reaches_z(vae_dir: Path) -> None:
    codec = VAECodec(str(vae_dir), channels=1)
    z = codec.encode(images(1)).z.detach().requires_grad_(True)
    y = codec.decode(codec.encode(images(1)).with_z(z))
    (grad,) = torch.autograd.grad(y.square().sum(), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_decoder_features_match_hooks(vae_dir: Path, reference) -> None:
    codec = VAECodec(str(vae_dir), channels=3)
    z = codec.encode(images(3)).z.detach().requires_grad_(True)
    features = codec.decoder_features(z)
    # independent: capture the same activations with hooks during diffusers' own decode
    captured: list[torch.Tensor] = []
    blocks = [reference.decoder.mid_block, *reference.decoder.up_blocks]
    hooks = [b.register_forward_hook(lambda _m, _i, out: captured.append(out)) for b in blocks]
    try:
        with torch.no_grad():
            reference.decode(z / SCALE + SHIFT)
    finally:
        for h in hooks:
            h.remove()
    assert len(features) == len(captured) == 3
    for got, want in zip(features, captured, strict=True):
        torch.testing.assert_close(got.detach(), want)
    (grad,) = torch.autograd.grad(sum(f.square().mean() for f in features), z)
    assert grad.abs().sum() > 0


def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "not-a-vae"
    with pytest.raises(ConfigError, match="not-a-vae"):
        VAECodec(str(missing))
    with pytest.raises(ConfigError, match="codec.path"):
        VAECodec(None)


def test_unsupported_channel_count(vae_dir: Path) -> None:
    with pytest.raises(ConfigError, match="in_channels=3"):
        VAECodec(str(vae_dir), channels=2)


def test_size_not_multiple(vae_dir: Path) -> None:
    codec = VAECodec(str(vae_dir), channels=1)
    with pytest.raises(ValueError, match="15x16"):
        codec.encode(torch.rand(1, 1, 15, 16))


def test_build_codec_vae(vae_dir: Path) -> None:
    codec = build_codec(CodecConfig(name="vae", path=str(vae_dir)), channels=1)
    assert isinstance(codec, VAECodec) and codec.channels == 1
