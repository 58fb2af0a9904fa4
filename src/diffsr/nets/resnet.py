"""An EDSR-like residual body as a diffusion denoiser: no down-sampling, no normalisation.

In the wavelet ``all`` space at level 2 the latent is already at the LR resolution (H / 4), which
is where EDSR works. This denoiser is EDSR's body on that grid: a 3x3 head over the noisy latent
and the condition, ``blocks`` residual blocks (conv-ReLU-conv, scaled by ``res_scale``) each
modulated by the time embedding (a per-channel scale and shift, FiLM), a long skip, and a 3x3
output convolution initialised to zero (a residual x0 head then starts at the condition).

Without GroupNorm or attention every output pixel depends on a fixed neighbourhood
(``2 + 2 blocks`` pixels), so exact tiling needs a single pass; it is fast on CPUs.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.core.schema import Strict
from diffsr.nets.base import NETS
from diffsr.nets.unet import timestep_embedding

__all__ = ["RESNET_PRESETS", "ResNetConfig", "ResNetDenoiser"]

RESNET_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"width": 48, "blocks": 8},
    "small": {"width": 64, "blocks": 16},
    "base": {"width": 128, "blocks": 24},
}


class _Block(nn.Module):
    """conv-ReLU-conv with the time embedding's FiLM after the first conv; x + res_scale * f(x)."""

    def __init__(self, width: int, emb: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(emb, 2 * width)
        self.res_scale = res_scale

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(x) * (1 + scale) + shift
        return x + self.res_scale * self.conv2(torch.relu(h))


class ResNetDenoiser(nn.Module):
    """``net(x, t_input, cond)``: an EDSR-like residual body at the latent resolution."""

    def __init__(self, in_channels: int, cond_channels: int, out_channels: int, *, size: str = "tiny",
                 width: int | None = None, blocks: int | None = None, res_scale: float = 0.1) -> None:
        super().__init__()
        if size not in RESNET_PRESETS:
            raise ConfigError(f"net.size: unknown resnet size '{size}' (choose from {', '.join(RESNET_PRESETS)})")
        width = int(width or RESNET_PRESETS[size]["width"])
        blocks = int(blocks or RESNET_PRESETS[size]["blocks"])
        self.in_channels, self.cond_channels, self.out_channels = in_channels, cond_channels, out_channels
        self.multiple = 1  # no down-sampling: any size, and exact tiles may start anywhere
        self.width, emb = width, 4 * width
        self.time_embed = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.head = nn.Conv2d(in_channels + cond_channels, width, 3, padding=1)
        self.body = nn.ModuleList(_Block(width, emb, res_scale) for _ in range(blocks))
        self.tail = nn.Conv2d(width, width, 3, padding=1)
        self.out_conv = nn.Conv2d(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        emb = self.time_embed(timestep_embedding(t, self.width).to(x.dtype))
        h = head = self.head(torch.cat([x, cond], dim=1))
        for block in self.body:
            h = block(h, emb)
        return self.out_conv(self.tail(h) + head)


class ResNetConfig(Strict):
    """The EDSR-like residual denoiser (:class:`ResNetDenoiser`); explicit fields override ``size``."""

    name: Literal["resnet"] = "resnet"
    size: Literal["tiny", "small", "base"] = "tiny"
    width: int | None = Field(None, ge=8)
    blocks: int | None = Field(None, ge=1)
    res_scale: float = Field(0.1, gt=0)


def _build(cfg: ResNetConfig, *, in_channels: int, cond_channels: int, out_channels: int, **_: object
           ) -> ResNetDenoiser:
    return ResNetDenoiser(in_channels, cond_channels, out_channels, size=cfg.size, width=cfg.width,
                          blocks=cfg.blocks, res_scale=cfg.res_scale)


NETS.register("resnet", config=ResNetConfig, build=_build)(ResNetDenoiser)
