"""Build a :class:`~diffsr.losses.stack.LossStack` from a :class:`~diffsr.config.LossesConfig`.

Each term name maps to a factory in :data:`TERMS`; factories import their module lazily, so
building a stack of pixel terms never imports lpips, and a broken optional dependency only
breaks the term that needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from diffsr.config import LossesConfig
from diffsr.core.errors import ConfigError
from diffsr.core.registry import Registry
from diffsr.losses.gates import build_gate
from diffsr.losses.latent import LatentL1Loss, LatentL2Loss
from diffsr.losses.schedules import build_schedule
from diffsr.losses.stack import LossStack
from diffsr.losses.term import LossTerm

__all__ = ["LATENT_SPACE_TERMS", "TERMS", "build_loss_stack", "build_term_module"]

logger = logging.getLogger(__name__)

#: name -> factory(term_config, channels=..., codec=...) -> nn.Module
TERMS: Registry[nn.Module] = Registry("loss term")

#: terms computed on (z0_hat, z0) without decoding
LATENT_SPACE_TERMS = {"latent_l1", "latent_l2", "latent_perceptual"}

Factory = Callable[..., nn.Module]


def _register(*names: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        for name in names:
            TERMS.register(name)(factory)
        return factory

    return wrap


@_register("l1", "l2", "charbonnier")
def _pixel(cfg: Any, **_: Any) -> nn.Module:
    from diffsr.losses import pixel

    if cfg.name == "l1":
        return pixel.L1Loss()
    if cfg.name == "l2":
        return pixel.L2Loss()
    return pixel.CharbonnierLoss(eps=cfg.eps)


@_register("ssim", "msssim")
def _ssim(cfg: Any, **_: Any) -> nn.Module:
    from diffsr.losses import ssim

    cls = ssim.SSIMLoss if cfg.name == "ssim" else ssim.MSSSIMLoss
    return cls(window=cfg.window, sigma=cfg.sigma, data_range=cfg.data_range)


@_register("lpips")
def _lpips(cfg: Any, **_: Any) -> nn.Module:
    from diffsr.losses import perceptual

    return perceptual.LPIPSLoss(net=cfg.net, weights=cfg.weights, backbone_weights=cfg.backbone_weights)


@_register("ffl")
def _ffl(cfg: Any, **_: Any) -> nn.Module:
    from diffsr.losses import frequency

    return frequency.FocalFrequencyLoss(
        alpha=cfg.alpha, log_matrix=cfg.log_matrix, batch_matrix=cfg.batch_matrix
    )


@_register("edge", "flat")
def _edges(cfg: Any, **_: Any) -> nn.Module:
    from diffsr.losses import edges

    cls = edges.EdgeLoss if cfg.name == "edge" else edges.FlatLoss
    return cls(threshold=cfg.threshold)


@_register("latent_l1", "latent_l2")
def _latent(cfg: Any, **_: Any) -> nn.Module:
    return LatentL1Loss() if cfg.name == "latent_l1" else LatentL2Loss()


@_register("latent_perceptual")
def _latent_perceptual(cfg: Any, *, codec: Any = None, **_: Any) -> nn.Module:
    if codec is None:
        raise ConfigError(f"term '{cfg.key}' (latent_perceptual) needs the VAE codec (codec.name: vae)")
    from diffsr.losses import latent_perceptual

    return latent_perceptual.LatentPerceptualLoss(codec=codec, layers=cfg.layers)


@_register("gan")
def _gan(cfg: Any, *, channels: int, **_: Any) -> nn.Module:
    from diffsr.losses import adversarial

    return adversarial.GANLoss(
        channels=channels, loss=cfg.loss, layers=cfg.layers, width=cfg.width, lr=cfg.lr,
        betas=tuple(cfg.betas), r1_gamma=cfg.r1_gamma, r1_interval=cfg.r1_interval, warmup=cfg.warmup,
    )


@_register("feature")
def _feature(cfg: Any, **_: Any) -> nn.Module:
    from diffsr.losses import feature

    return feature.FeatureLoss(model=cfg.model, layers=list(cfg.layers))


def build_term_module(cfg: Any, *, channels: int, codec: Any = None) -> nn.Module:
    """The loss module for one term config (``cfg.name`` picks the factory)."""
    return TERMS.get(cfg.name)(cfg, channels=channels, codec=codec)


def build_loss_stack(
    cfg: LossesConfig, *, channels: int, codec: Any = None, total_steps: int | None = None
) -> LossStack:
    """The :class:`LossStack` for ``cfg``: one module, gate and schedule per term.

    channels: image channels (the GAN discriminator's input). codec: the codec (needed by
    latent_perceptual). total_steps: when given, terms whose schedule stays 0 for the whole
    run are reported in the log (the audit makes that an error).
    """
    terms = []
    for term_cfg in cfg.terms:
        space = "latent" if term_cfg.name in LATENT_SPACE_TERMS else "pixel"
        weight = build_schedule(term_cfg.weight)
        if total_steps is not None and weight.max_until(total_steps) == 0:
            logger.warning("loss term '%s' stays at weight 0 for all %d steps", term_cfg.key, total_steps)
        terms.append(
            LossTerm(
                key=term_cfg.key,
                module=build_term_module(term_cfg, channels=channels, codec=codec),
                space=space,
                weight=weight,
                gate=build_gate(term_cfg.gate),
                paired_only=term_cfg.paired_only,
            )
        )
    return LossStack(
        terms,
        decode_chunk=cfg.decode_chunk,
        nonfinite_policy=cfg.nonfinite.policy,
        max_consecutive=cfg.nonfinite.max_consecutive,
        diffusion_weight=cfg.diffusion_weight,
    )
