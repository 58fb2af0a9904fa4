"""Exponential moving average of a model's parameters AND buffers."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """Keeps a shadow copy of ``model``; ``update`` after each optimiser step.

    decay_t = min(decay, (1 + n) / (10 + n)) with n the number of updates, so early averages
    are not dominated by the random initialisation. Floating buffers are averaged too (a
    BatchNorm's running stats would otherwise be stale); integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards ``model``."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = dict(model.state_dict())
        for name, value in self.shadow.state_dict().items():
            new = src[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(new.to(value.dtype), alpha=1 - d)
            else:
                value.copy_(new)

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow weights (tensors only, for safetensors)."""
        return {k: v.detach().clone() for k, v in self.shadow.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore shadow weights."""
        self.shadow.load_state_dict(state)
