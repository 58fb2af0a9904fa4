"""Losses: gated, scheduled terms sharing one decode per step (see docs/losses.md).

Works in any PyTorch loop::

    from diffsr.losses import LinearGate, LossStack, LossTerm

Importing this package registers every built-in term (each term module defines its config
model and builder beside its code, see :mod:`diffsr.losses.base`); no term module imports a
heavy dependency at import time (LPIPS weights, TorchScript feature nets and the like are
loaded when a term is built).
"""

from __future__ import annotations

# the built-in terms register themselves on import (explicit imports, no folder scanning)
from diffsr.losses import (  # noqa: F401
    adversarial,
    edges,
    feature,
    frequency,
    latent,
    latent_perceptual,
    perceptual,
    pixel,
    ssim,
)
from diffsr.losses.base import TERMS, TermBase
from diffsr.losses.build import build_loss_stack, build_term_module
from diffsr.losses.gates import GATES, BinsGate, Gate, HardGate, LinearGate, NoGate, build_gate
from diffsr.losses.latent import LatentL1Loss, LatentL2Loss, latent_error
from diffsr.losses.report import LossReport, TermReport, log_report
from diffsr.losses.schedules import SCHEDULES, Adaptive, Constant, Linear, Ramp, Schedule, Stages, build_schedule
from diffsr.losses.stack import DeadTermError, LossStack, NonFiniteError
from diffsr.losses.term import LossTerm

__all__ = [
    "GATES",
    "SCHEDULES",
    "TERMS",
    "Adaptive",
    "BinsGate",
    "Constant",
    "DeadTermError",
    "Gate",
    "HardGate",
    "LatentL1Loss",
    "LatentL2Loss",
    "Linear",
    "LinearGate",
    "LossReport",
    "LossStack",
    "LossTerm",
    "NoGate",
    "NonFiniteError",
    "Ramp",
    "Schedule",
    "Stages",
    "TermBase",
    "TermReport",
    "build_gate",
    "build_loss_stack",
    "build_schedule",
    "build_term_module",
    "latent_error",
    "log_report",
]

