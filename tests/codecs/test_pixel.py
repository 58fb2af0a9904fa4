"""The pixel codec: z = 2x - 1 and back, nothing to learn."""

from __future__ import annotations

import pytest
import torch

from diffsr.codecs import PixelCodec
from tests.codecs._helpers import rand_images


def test_pixel_codec_formula() -> None:
    codec = PixelCodec(channels=3)
    x = rand_images(2, 3, 8, 8, dtype=torch.float64)
    latent = codec.encode(x)
    torch.testing.assert_close(latent.z, 2 * x - 1)
    assert latent.side == {}
    torch.testing.assert_close(codec.decode(latent), x)
    assert codec.latent_channels(3) == 3 and codec.downsample == 1
    with pytest.raises(StopIteration):
        next(codec.parameters())
