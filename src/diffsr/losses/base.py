"""What every loss term shares: the term registry and the common config fields.

A loss term is one module that defines its config model (a :class:`TermBase` subclass whose
``name`` is a Literal of the names it answers to) and registers a builder with :data:`TERMS`::

    class TVTerm(TermBase):
        name: Literal["tv"]
        eps: float = 1e-3

    @TERMS.register("tv", config=TVTerm, space="pixel")
    def build_tv(cfg: TVTerm, **context) -> nn.Module:
        return TVLoss(cfg.eps)          # module(pred, target, mask) -> (B,) per-sample loss

Capabilities: ``space`` ("pixel": the module sees the decoded x0_hat and the HR image;
"latent": z0_hat and z0, no decode) and ``requires_codec`` (a codec name the term only works
with, e.g. "vae" for the latent perceptual loss). A builder receives ``channels`` (image
channels) and ``codec`` (the codec instance) as context.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from diffsr.core.registry import Registry
from diffsr.core.schema import Strict
from diffsr.losses.gates import GATES, NoGateConfig
from diffsr.losses.schedules import SCHEDULES, ConstantSchedule

__all__ = ["TERMS", "TermBase"]

#: loss terms by name; builders are called ``build(cfg, channels=..., codec=...)``
TERMS: Registry[nn.Module] = Registry(
    "loss term", call="config", capabilities={"space": "pixel", "requires_codec": None}
)


class TermBase(Strict):
    """Fields shared by every loss term (``diffsr.config`` widens ``weight`` and ``gate`` to every
    registered schedule and gate)."""

    label: str | None = None  # key in reports; defaults to the term name
    weight: SCHEDULES.config_union(default="constant") = Field(  # type: ignore[valid-type]
        default_factory=ConstantSchedule)
    gate: GATES.config_union(default="none") = Field(default_factory=NoGateConfig)  # type: ignore[valid-type]
    paired_only: bool = True  # unpaired samples get no fidelity term

    @property
    def key(self) -> str:
        """The term's name in reports and logs."""
        return self.label or self.name  # type: ignore[attr-defined]
