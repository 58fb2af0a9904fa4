"""The denoiser registry: every network a config's ``net`` section can name.

Capabilities: ``feed_forward`` (an SR network LR -> SR trained with process ``direct``, e.g.
EDSR; the model wraps it so it speaks the pixel codec's latent), ``exact_tiling`` (tiles of the
network's input give the whole-image result with a receptive-field halo, sample.tile_mode exact).
Builders are called ``build(cfg, in_channels=, cond_channels=, out_channels=, channels=, scale=)``
and take what they need.
"""

from __future__ import annotations

from torch import nn

from diffsr.core.registry import Registry

__all__ = ["NETS"]

NETS: Registry[nn.Module] = Registry("net", capabilities={"feed_forward": False, "exact_tiling": True})
