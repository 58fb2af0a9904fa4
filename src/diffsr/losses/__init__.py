"""Losses: gated, scheduled terms sharing one decode per step (see docs/losses.md).

Works in any PyTorch loop::

    from diffsr.losses import LinearGate, LossStack, LossTerm

Importing this package loads only the stack, the latent terms, gates, schedules and reports;
term modules (``pixel``, ``ssim``, ``perceptual``, ``frequency``, ``edges``, ``adversarial``,
``feature``, ``latent_perceptual``) are imported on first attribute access, so lpips and friends
load only when a term needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from diffsr.losses.build import TERMS, build_loss_stack, build_term_module
from diffsr.losses.gates import BinsGate, Gate, HardGate, LinearGate, NoGate, build_gate
from diffsr.losses.latent import LatentL1Loss, LatentL2Loss, latent_error
from diffsr.losses.report import LossReport, TermReport, log_report
from diffsr.losses.schedules import Adaptive, Constant, Linear, Ramp, Schedule, Stages, build_schedule
from diffsr.losses.stack import DeadTermError, LossStack, NonFiniteError
from diffsr.losses.term import LossTerm

_LAZY_MODULES = {
    "pixel", "ssim", "perceptual", "frequency", "edges", "adversarial", "feature", "latent_perceptual",
}

__all__ = [
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
    "TermReport",
    "build_gate",
    "build_loss_stack",
    "build_schedule",
    "build_term_module",
    "latent_error",
    "log_report",
]


def __getattr__(name: str) -> Any:
    """Import term modules (``diffsr.losses.ssim`` ...) on first access."""
    if name in _LAZY_MODULES:
        module = importlib.import_module(f"diffsr.losses.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'diffsr.losses' has no attribute {name!r}")
