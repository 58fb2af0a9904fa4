"""The codec interface: images <-> the space the diffusion process runs in.

A codec is stateless between calls: anything ``decode`` needs besides ``z`` (for example the
high-frequency bands taken from the LR condition in the wavelet ``ll`` layout) travels in
``Latent.side``. Codecs are ``nn.Module`` so that learnable ones (``all_learnable``) train
with the denoiser and move with ``.to(device)``; parameter-free ones hold no parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from diffsr.core.registry import Registry

#: codecs by name; capabilities: ``exact_tiling`` (the codec can run on the whole image so the
#: denoiser alone is tiled, sample.tile_mode exact), ``pixel_space`` (the latent is the image
#: itself, shifted: feed-forward baselines need it)
CODECS: Registry[Codec] = Registry("codec", capabilities={"exact_tiling": True, "pixel_space": False})


@dataclass
class Latent:
    """A latent tensor ``z`` (B, C', H', W') and the side information needed to decode it."""

    z: Tensor
    side: dict[str, Tensor] = field(default_factory=dict)

    def with_z(self, z: Tensor) -> Latent:
        """The same side information with another ``z`` (e.g. a prediction z0_hat)."""
        return Latent(z, self.side)

    def select(self, index: Tensor) -> Latent:
        """Rows ``index`` of ``z`` and of every side tensor."""
        return Latent(self.z[index], {k: v[index] for k, v in self.side.items()})


class Codec(nn.Module):
    """Base class. Subclasses implement ``encode``, ``decode`` and ``latent_channels``.

    Images are float in [0, 1] with shape (B, C, H, W); H and W must be multiples of
    ``downsample`` (callers pad and mask).
    """

    #: spatial reduction factor: latent H' = H / downsample
    downsample: int = 1
    #: True when the codec has trainable parameters (they train with the denoiser)
    is_learned: bool = False
    #: True when encoding is exactly invertible (decode(encode(x)) == x)
    is_lossless: bool = True
    #: True when ``decode`` is linear in ``z`` (lets consistency projections run in latent space)
    is_linear: bool = True

    def encode(self, x: Tensor) -> Latent:
        """Image (B, C, H, W) in [0, 1] -> Latent."""
        raise NotImplementedError

    def decode(self, latent: Latent) -> Tensor:
        """Latent -> image (B, C, H, W), differentiable in ``latent.z``."""
        raise NotImplementedError

    def latent_channels(self, channels: int) -> int:
        """Number of latent channels for an image with ``channels`` channels."""
        raise NotImplementedError

    def latent_shape(self, shape: tuple[int, ...] | torch.Size) -> tuple[int, int, int, int]:
        """The latent shape (B, C', H', W') for images of ``shape`` (B, C, H, W) (H, W multiples of
        ``downsample``)."""
        b, c, h, w = shape
        f = self.downsample
        return (int(b), self.latent_channels(int(c)), int(h) // f, int(w) // f)

    def check_size(self, h: int, w: int, where: str = "image") -> None:
        """Raise ValueError unless (h, w) are multiples of ``downsample``."""
        f = self.downsample
        if h % f or w % f:
            raise ValueError(
                f"{where}: size {h}x{w} is not a multiple of {f}; pad it (diffsr.codecs.pad_to)"
            )


def pad_to(x: Tensor, multiple: int) -> tuple[Tensor, Tensor]:
    """Reflect-pad (B, C, H, W) on the bottom/right to a multiple; returns (padded, mask).

    ``mask`` is (B, 1, H', W') with 1 on the original pixels and 0 on the padding.
    """
    b, _, h, w = x.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    mask = torch.ones(b, 1, h, w, dtype=x.dtype, device=x.device)
    if ph == 0 and pw == 0:
        return x, mask
    mode = "reflect" if ph < h and pw < w else "replicate"
    x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    mask = nn.functional.pad(mask, (0, pw, 0, ph), value=0.0)
    return x, mask
