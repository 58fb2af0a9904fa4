"""Build a :class:`~diffsr.losses.stack.LossStack` from the ``losses`` section of a config.

Every term's builder, space and config model are registered in :data:`TERMS` beside its code
(``diffsr.losses.pixel``, ``ssim``, ...); building a stack only looks them up, so a new term is
one module and lpips-like dependencies are imported only when a term that needs them is built.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from diffsr.losses.base import TERMS
from diffsr.losses.gates import build_gate
from diffsr.losses.schedules import build_schedule
from diffsr.losses.stack import LossStack
from diffsr.losses.term import LossTerm

__all__ = ["TERMS", "build_loss_stack", "build_term_module", "term_space"]

logger = logging.getLogger(__name__)


def term_space(name: str) -> str:
    """"pixel" or "latent": where the registered term ``name`` works."""
    return str(TERMS.caps(name).space)


def build_term_module(cfg: Any, *, channels: int, codec: Any = None) -> nn.Module:
    """The loss module for one term config (``cfg.name`` picks the registered builder)."""
    return TERMS.build_from(cfg, channels=channels, codec=codec)


def build_loss_stack(cfg: Any, *, channels: int, codec: Any = None, total_steps: int | None = None,
                     process: Any = None) -> LossStack:
    """The :class:`LossStack` for a ``losses`` config section: one module, gate and schedule per term.

    channels: image channels (the GAN discriminator's input). codec: the codec (needed by
    latent_perceptual). total_steps: when given, terms whose schedule stays 0 for the whole
    run are reported in the log (the audit makes that an error). process: the diffusion
    process (the ``sampler`` gate opens at its sampling times).
    """
    terms = []
    for term_cfg in cfg.terms:
        weight = build_schedule(term_cfg.weight)
        if total_steps is not None and weight.max_until(total_steps) == 0:
            logger.warning("loss term '%s' stays at weight 0 for all %d steps", term_cfg.key, total_steps)
        terms.append(
            LossTerm(
                key=term_cfg.key,
                module=build_term_module(term_cfg, channels=channels, codec=codec),
                space=term_space(term_cfg.name),  # type: ignore[arg-type]
                weight=weight,
                gate=build_gate(term_cfg.gate, process=process),
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
