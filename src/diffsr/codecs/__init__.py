"""Codecs: images <-> the space the diffusion process runs in.

Registered names (``CODECS.build(name, **kwargs)`` or :func:`build_codec` from a config):
``pixel`` (:class:`PixelCodec`), ``wavelet`` (:class:`WaveletCodec`), ``vae``
(:class:`VAECodec`; diffusers is imported only when one is built). Each codec module registers
its config model and capabilities with :data:`CODECS` (:mod:`diffsr.codecs.base`).
"""

from __future__ import annotations

from typing import Any

from diffsr.codecs.base import CODECS, Codec, Latent, pad_to
from diffsr.codecs.pixel import PixelCodec, PixelConfig
from diffsr.codecs.vae import VAECodec, VAEConfig
from diffsr.codecs.wavelet import WaveletCodec, WaveletConfig, dwt2, idwt2, wavedec2, waverec2


def build_codec(cfg: Any, channels: int) -> Codec:
    """The codec a registered codec config asks for, for images with ``channels`` channels."""
    return CODECS.build_from(cfg, channels=channels)


__all__ = [
    "CODECS",
    "Codec",
    "Latent",
    "PixelCodec",
    "PixelConfig",
    "VAECodec",
    "VAEConfig",
    "WaveletCodec",
    "WaveletConfig",
    "build_codec",
    "dwt2",
    "idwt2",
    "pad_to",
    "wavedec2",
    "waverec2",
]
