"""Shared by the tests of the tiled and cached net evaluation."""

from __future__ import annotations

import torch
from torch import nn


def wake(net: nn.Module) -> nn.Module:
    """Give zero-initialised layers (output conv, attention projections) random weights (seed 0);
    returns the net in eval mode."""
    torch.manual_seed(0)
    for p in net.parameters():
        if not p.any():
            nn.init.normal_(p, std=0.05)
    return net.eval()
