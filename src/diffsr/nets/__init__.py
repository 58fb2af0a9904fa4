"""Networks: the conditional UNet denoiser and SR baselines (EDSR, RCAN, SwinIR).

``NETS`` builds denoisers by name (``"unet"``); :func:`build_net` builds one from a
``NetConfig``. ``BASELINES`` builds the feed-forward SR baselines; they import spandrel lazily,
only when one is built or loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from diffsr.core.registry import Registry
from diffsr.nets.baselines import BASELINES, build_baseline, load_baseline
from diffsr.nets.unet import PRESETS, UNet, norm_groups, timestep_embedding

if TYPE_CHECKING:  # annotation only: nets sits below config in the import order
    from diffsr.config import NetConfig

NETS: Registry[nn.Module] = Registry("net")
NETS.register("unet")(UNet)


def build_net(cfg: NetConfig, *, in_channels: int, cond_channels: int, out_channels: int) -> nn.Module:
    """The denoiser named by ``cfg.name``; explicit ``cfg`` fields override the size preset."""

    def as_tuple(value: list[int] | None) -> tuple[int, ...] | None:
        return None if value is None else tuple(value)

    return NETS.build(
        cfg.name,
        in_channels=in_channels,
        cond_channels=cond_channels,
        out_channels=out_channels,
        size=cfg.size,
        width=cfg.width,
        channel_mult=as_tuple(cfg.channel_mult),
        num_res_blocks=cfg.num_res_blocks,
        attention_levels=as_tuple(cfg.attention_levels),
        dropout=cfg.dropout,
    )


__all__ = [
    "BASELINES",
    "NETS",
    "PRESETS",
    "UNet",
    "build_baseline",
    "build_net",
    "load_baseline",
    "norm_groups",
    "timestep_embedding",
]
