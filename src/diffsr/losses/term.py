"""One term of the loss stack: a per-sample loss with its space, weight schedule, gate and pairing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.losses.gates import Gate, NoGate
from diffsr.losses.schedules import Schedule, build_schedule

__all__ = ["LossTerm"]


class _FunctionTerm(nn.Module):
    """Wraps a plain function ``fn(pred, target, mask) -> (B,)`` as a module."""

    def __init__(self, fn: Callable[[Tensor, Tensor, Tensor | None], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.fn(pred, target, mask)


@dataclass(eq=False)
class LossTerm:
    """One term of the stack.

    key: name in reports and logs. module: ``module(pred, target, mask) -> (B,)`` per-sample
    loss (an ``nn.Module`` or a plain function). space: "pixel" (pred = decoded x0_hat,
    target = hr) or "latent" (pred = z0_hat, target = z0). weight: a :class:`Schedule` or a
    number. gate: a :class:`Gate` (None: open for every t). paired_only: unpaired rows get
    factor 0.
    """

    key: str
    module: Any
    space: Literal["pixel", "latent"] = "pixel"
    weight: Schedule | float = field(default_factory=lambda: build_schedule(1.0))
    gate: Gate | None = None
    paired_only: bool = True

    def __post_init__(self) -> None:
        if not self.key or "." in self.key or self.key == "diffusion":
            raise ConfigError(
                f"loss term key {self.key!r} is not allowed (empty, contains '.', or 'diffusion')"
            )
        if self.space not in ("pixel", "latent"):
            raise ConfigError(
                f"loss term '{self.key}': space must be 'pixel' or 'latent', got {self.space!r}"
            )
        if not isinstance(self.module, nn.Module):
            if not callable(self.module):
                raise TypeError(f"loss term '{self.key}': module must be callable, got {type(self.module)}")
            self.module = _FunctionTerm(self.module)
        self.weight = build_schedule(self.weight)
        if self.gate is None:
            self.gate = NoGate()
