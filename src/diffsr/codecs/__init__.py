"""Codecs: images <-> the space the diffusion process runs in.

Registered names (``CODECS.build(name, **kwargs)`` or :func:`build_codec` from a config):
``pixel`` (:class:`PixelCodec`), ``wavelet`` (:class:`WaveletCodec`), ``vae``
(:class:`VAECodec`; diffusers is imported only when one is built).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffsr.codecs.base import Codec, Latent, pad_to
from diffsr.codecs.pixel import PixelCodec
from diffsr.codecs.vae import VAECodec
from diffsr.codecs.wavelet import WaveletCodec, dwt2, idwt2, wavedec2, waverec2
from diffsr.core.registry import Registry

if TYPE_CHECKING:  # config sits above codecs in the import order; only the annotation needs it
    from diffsr.config import CodecConfig

CODECS: Registry[Codec] = Registry("codec")
CODECS.register("pixel")(PixelCodec)
CODECS.register("wavelet")(WaveletCodec)
CODECS.register("vae")(VAECodec)


def build_codec(cfg: CodecConfig, channels: int) -> Codec:
    """The codec a config asks for, for images with ``channels`` channels."""
    if cfg.name == "pixel":
        return CODECS.build("pixel", channels=channels)
    if cfg.name == "wavelet":
        return CODECS.build("wavelet", wavelet=cfg.wavelet, levels=cfg.levels, layout=cfg.layout, channels=channels)
    return CODECS.build(cfg.name, path=cfg.path, channels=channels)


__all__ = [
    "CODECS",
    "Codec",
    "Latent",
    "PixelCodec",
    "VAECodec",
    "WaveletCodec",
    "build_codec",
    "dwt2",
    "idwt2",
    "pad_to",
    "wavedec2",
    "waverec2",
]
