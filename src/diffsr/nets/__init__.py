"""Networks: the conditional UNet denoiser and SR baselines (EDSR, RCAN, SwinIR).

``NETS`` (:mod:`diffsr.nets.base`) holds every network a config's ``net`` section can name,
each with its config model and capabilities; :func:`build_net` builds one from its config.
``BASELINES`` builds the feed-forward SR baselines by name; they import spandrel lazily, only
when one is built or loaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from diffsr.nets.base import NETS
from diffsr.nets.baselines import BASELINES, BaselineNetConfig, build_baseline, load_baseline
from diffsr.nets.resnet import ResNetConfig, ResNetDenoiser
from diffsr.nets.unet import PRESETS, UNet, UNetConfig, norm_groups, timestep_embedding


def build_net(cfg: Any, *, in_channels: int = 1, cond_channels: int = 1, out_channels: int = 1, channels: int = 1,
              scale: int = 4) -> nn.Module:
    """The network named by ``cfg.name`` (a registered net's config model).

    A denoiser uses in/cond/out channels (latent channels); a feed-forward baseline uses the
    image ``channels`` and ``scale``.
    """
    return NETS.build_from(cfg, in_channels=in_channels, cond_channels=cond_channels, out_channels=out_channels,
                           channels=channels, scale=scale)


__all__ = [
    "BASELINES",
    "NETS",
    "PRESETS",
    "BaselineNetConfig",
    "ResNetConfig",
    "ResNetDenoiser",
    "UNet",
    "UNetConfig",
    "build_baseline",
    "build_net",
    "load_baseline",
    "norm_groups",
    "timestep_embedding",
]
