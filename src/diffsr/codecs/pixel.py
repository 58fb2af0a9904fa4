"""The identity codec: diffusion runs on pixels, shifted to [-1, 1]."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from diffsr.codecs.base import CODECS, Codec, Latent
from diffsr.core.schema import Strict
from diffsr.core.shapes import check_image


class PixelConfig(Strict):
    """Diffusion on pixels shifted to [-1, 1] (no parameters)."""

    name: Literal["pixel"] = "pixel"


@CODECS.register("pixel", config=PixelConfig, pixel_space=True)
class PixelCodec(Codec):
    """``z = 2x - 1``, ``x = (z + 1) / 2``; latent channels = image channels, downsample 1.

    ``channels`` is informational (any channel count works); the codec has no parameters.
    """

    downsample = 1
    is_learned = False
    is_lossless = True
    is_linear = True

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"codec channels: expected >= 1, got {channels}")
        self.channels = channels

    def encode(self, x: Tensor) -> Latent:
        """Image (B, C, H, W) in [0, 1] -> Latent(2x - 1)."""
        check_image(x, "encode")
        return Latent(2 * x - 1)

    def decode(self, latent: Latent) -> Tensor:
        """Latent -> (z + 1) / 2 (no clamping)."""
        check_image(latent.z, "decode")
        return (latent.z + 1) / 2

    def latent_channels(self, channels: int) -> int:
        """Same as the image."""
        return channels
