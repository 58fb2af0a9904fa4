"""A frozen diffusers ``AutoencoderKL`` as codec (latent diffusion).

The VAE is read from a local folder only (``config.json`` + ``diffusion_pytorch_model.safetensors``,
as written by ``AutoencoderKL.save_pretrained``); nothing is ever downloaded. diffusers is
imported when a :class:`VAECodec` is built, never when :mod:`diffsr.codecs` is imported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from diffsr.codecs.base import CODECS, Codec, Latent
from diffsr.core.errors import ConfigError
from diffsr.core.schema import Strict
from diffsr.core.shapes import check_image

log = logging.getLogger(__name__)


class VAEConfig(Strict):
    """A diffusers ``AutoencoderKL`` from a local folder (``path``)."""

    name: Literal["vae"] = "vae"
    path: str | None = None  # a local diffusers AutoencoderKL folder


@CODECS.register("vae", config=VAEConfig, exact_tiling=False)
class VAECodec(Codec):
    """Images in [0, 1] <-> scaled VAE latents ``z = (mode(q(z|2x - 1)) - shift) * scale``.

    ``scale`` and ``shift`` are the VAE config's ``scaling_factor`` and ``shift_factor`` (None
    -> 0). Encoding uses the posterior mode (deterministic). 1-channel images are replicated to
    the VAE's ``in_channels`` and its output averaged back to 1 channel (logged once). The VAE is
    frozen (no gradients, always in eval mode); decode stays differentiable in ``z`` so
    pixel-space losses reach the denoiser. ``downsample = 2 ** (len(block_out_channels) - 1)``.
    """

    is_learned = False
    is_lossless = False
    is_linear = False

    def __init__(self, path: str | None = None, channels: int = 1) -> None:
        super().__init__()
        folder = Path(path) if path else None
        if folder is None or not (folder / "config.json").is_file():
            raise ConfigError(
                f"codec.path: VAE folder '{path}' not found; provide a local diffusers AutoencoderKL "
                "folder (config.json + diffusion_pytorch_model.safetensors)"
            )
        from diffusers import AutoencoderKL

        try:
            vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        except OSError as err:  # diffusers reports a missing weights file as OSError
            raise ConfigError(f"codec.path: cannot load a VAE from '{path}': {err}".replace("\n", " ")) from err
        vae.requires_grad_(False)
        vae.eval()
        self.vae = vae
        self.path = str(folder)
        cfg: Any = vae.config
        self.channels = channels
        self.vae_in = int(cfg.in_channels)
        self.vae_out = int(cfg.out_channels)
        for name, n in (("in_channels", self.vae_in), ("out_channels", self.vae_out)):
            if channels not in (1, n):
                raise ConfigError(
                    f"codec.path: VAE '{path}' has {name}={n}; cannot use it for {channels}-channel images"
                )
        if channels == 1 and self.vae_in != 1:
            log.info(
                "VAE %s: 1-channel images replicated to %d input channels, output averaged",
                path,
                self.vae_in,
            )
        self.scale = float(cfg.scaling_factor)
        self.shift = float(cfg.shift_factor) if cfg.shift_factor is not None else 0.0
        self.z_channels = int(cfg.latent_channels)
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        log.info("VAE codec from %s (scale %g, shift %g, x%d)", path, self.scale, self.shift, self.downsample)

    def train(self, mode: bool = True) -> VAECodec:
        """The VAE stays in eval mode whatever the trainer asks (it is frozen)."""
        super().train(mode)
        self.vae.eval()
        return self

    def extra_repr(self) -> str:
        return f"path={self.path!r}, scale={self.scale}, shift={self.shift}"

    def latent_channels(self, channels: int) -> int:
        """The VAE's ``latent_channels`` (whatever the image channel count)."""
        return self.z_channels

    def _to_vae(self, x: Tensor) -> Tensor:
        """[0, 1] image -> [-1, 1] with the VAE's channel count and dtype."""
        x = (2 * x - 1).to(self.vae.dtype)
        if x.shape[1] != self.vae_in:
            x = x.expand(-1, self.vae_in, -1, -1)
        return x

    def _unscale(self, z: Tensor) -> Tensor:
        return (z / self.scale + self.shift).to(self.vae.dtype)

    def encode(self, x: Tensor) -> Latent:
        """Image (B, C, H, W) in [0, 1] -> Latent((mode - shift) * scale)."""
        check_image(x, "encode")
        if x.shape[1] != self.channels:
            raise ValueError(f"encode: codec built for {self.channels} channel(s), got {tuple(x.shape)}")
        self.check_size(*x.shape[-2:], where="encode")
        mode = self.vae.encode(self._to_vae(x)).latent_dist.mode()
        return Latent(((mode - self.shift) * self.scale).to(x.dtype))

    def decode(self, latent: Latent) -> Tensor:
        """Latent -> image (B, C, H, W), ``(decoder(z / scale + shift) + 1) / 2``; differentiable."""
        z = latent.z
        check_image(z, "decode")
        out = self.vae.decode(self._unscale(z)).sample
        if out.shape[1] != self.channels:
            out = out.mean(dim=1, keepdim=True)
        return ((out + 1) / 2).to(z.dtype)

    def decoder_features(self, z: Tensor) -> list[Tensor]:
        """Decoder activations for a latent perceptual loss: [mid-block, up-block 0, 1, ...].

        Coarse to fine (the mid-block output is at the latent resolution); differentiable in z.
        """
        check_image(z, "decoder_features")
        h = self._unscale(z)
        if self.vae.post_quant_conv is not None:
            h = self.vae.post_quant_conv(h)
        decoder = self.vae.decoder
        h = decoder.conv_in(h)
        h = decoder.mid_block(h, None)
        features = [h]
        for block in decoder.up_blocks:
            h = block(h, None)
            features.append(h)
        return features
