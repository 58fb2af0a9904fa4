"""The receptive-field radius of a convolutional net, measured structurally and cheaply.

Exact tiling (:mod:`diffsr.nets.exact_tiling`) needs, for every output pixel, how far away an
input pixel can still change it. :func:`receptive_radius` measures that on a copy of the net in
which nothing can cancel: convolutions sum their taps over the channel sum, biases and linear
(embedding) layers are zero, every other weight is one, and the layers that see the whole image
(GroupNorm, attention, a global pool) are pointwise. An all-zero input then gives exactly zero
everywhere and a block of ones gives positive values (or +inf / NaN, which count too) exactly
where it reaches. Nothing is ever subtracted, so nothing cancels.

Three things keep the probe cheap (the 40M-parameter base UNet: about a second instead of
about ten minutes at batch 4 on one CPU core):

- The convolutions of the copy are *reduced*: ``conv(x)`` becomes a one-channel convolution of
  ``x.sum(channels)`` with a kernel of ones, broadcast back to the layer's output channels. The
  support is the same as with the full layer (a position is reached when any input channel is
  reached within the kernel), at the cost of a few element-wise passes instead of
  ``C_in x C_out x k^2`` multiply-adds per pixel.
- It probes strips, not squares: rows and columns separately, each on a strip ``2 multiple``
  wide, since the reach along a strip does not depend on its width (kernels are rectangles).
- It runs at batch 1 whatever the sampling batch (the radius does not depend on it).
"""

from __future__ import annotations

import copy
import math
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["receptive_radius"]

_RADII: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], int]] = weakref.WeakKeyDictionary()


def _reduced_conv(module: nn.Conv2d | nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """The support of ``module(x)`` (all weights positive): a ones-kernel conv of the channel sum."""
    total = x.sum(1, keepdim=True)
    kernel = total.new_ones(1, 1, *module.kernel_size)
    if isinstance(module, nn.ConvTranspose2d):
        out = F.conv_transpose2d(total, kernel, None, module.stride, module.padding,  # type: ignore[arg-type]
                                 module.output_padding, 1, module.dilation)  # type: ignore[arg-type]
    elif module.padding_mode != "zeros":
        padded = F.pad(total, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        out = F.conv2d(padded, kernel, None, module.stride, 0, module.dilation)
    else:
        out = F.conv2d(total, kernel, None, module.stride, module.padding, module.dilation)  # type: ignore[arg-type]
    # materialised, so in-place layers (ReLU(inplace=True)) and channel reshapes keep working
    return out.expand(-1, module.out_channels, -1, -1).contiguous()


@contextmanager
def _reduced(net: nn.Module) -> Iterator[None]:
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    for m in convs:
        m.forward = types.MethodType(_reduced_conv, m)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in convs:
            del m.forward


def _positive_copy(net: nn.Module) -> nn.Module:
    """A float32 copy of ``net`` whose biases and linear layers are zero and other weights positive.

    The parameters are broadcast scalars (no memory, nothing cloned): the reduced convolutions
    never read theirs, and the other layers only need the value.
    """
    memo: dict[int, Any] = {}
    for module in net.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, nn.Linear) or pname.endswith("bias"):
                value = 0.0  # embeddings -> FiLM scale and shift 0: the background stays exactly 0
            elif p.ndim > 1:  # sum over the kernel taps, mean over the input channels
                value = math.prod(p.shape[2:]) / p[0].numel()
            else:
                value = 1.0
            scalar = torch.full((), value, dtype=torch.float32, device=p.device)
            memo[id(p)] = nn.Parameter(scalar.expand(p.shape), requires_grad=False)
    return copy.deepcopy(net, memo).float()


def _reach(fn: Callable[..., Tensor], probe_net: nn.Module, channels: Sequence[int], *, multiple: int, scale: int,
           size: int, axis: int, probe: Callable[[nn.Module], Any] | None) -> int | None:
    """How far (input-grid pixels) a band of ones reaches along ``axis`` (0: rows, 1: columns) in a
    ``size`` x ``2 multiple`` strip (transposed for columns); None when it reaches the strip's end.

    The band spans the strip's whole width, so every layer's support is a set of whole rows and
    its extent along the strip is that of a ``multiple`` x ``multiple`` block in a large image.
    """
    device = next(iter(probe_net.parameters()), torch.empty(0)).device
    c0 = (size // 2 // multiple) * multiple
    hw = (size, 2 * multiple) if axis == 0 else (2 * multiple, size)
    inputs = []
    for c in channels:
        x = torch.zeros((1, c, *hw), dtype=torch.float32, device=device)
        if axis == 0:
            x[..., c0 : c0 + multiple, :] = 1.0
        else:
            x[..., :, c0 : c0 + multiple] = 1.0
        inputs.append(x)
    with torch.no_grad(), _reduced(probe_net), (probe(probe_net) if probe else _nothing()):
        out = fn(probe_net, *inputs)
    support = (out != 0).flatten(0, -3).any(0).any(1 - axis)  # along the strip, on the output grid
    hits = support.nonzero().flatten() // scale  # on the input grid
    if hits.numel() == 0:
        return 0
    if hits.min() == 0 or hits.max() == size - 1:
        return None
    return max(0, c0 + multiple - 1 - int(hits.min()), int(hits.max()) - c0)


def receptive_radius(fn: Callable[..., Tensor], shapes: Sequence[tuple[int, int]], *, multiple: int,
                     scale: int = 1, net: nn.Module, limit: int = 4096,
                     probe: Callable[[nn.Module], Any] | None = None) -> int:
    """Receptive-field radius (input-grid pixels) of ``fn(net, *inputs)`` with whole-image layers made pointwise.

    ``shapes``: (batch, channels) per input (the batch is ignored: the probe runs at batch 1).
    ``probe``: a context-manager factory that makes ``net``'s whole-image layers pointwise (the
    exact tiler's engine in probe mode); None when the net has none.
    A band of ones ``multiple`` rows high (every phase of the strides) across a strip
    ``2 multiple`` wide gives positive values exactly where it reaches (module docstring); the
    same for columns. The radius is the larger reach from the band's far edge (conservative by
    up to ``multiple - 1``). Each strip doubles in length until the reach stays inside it;
    no gradients, one reduced forward per length. Cached per net and shapes.
    """
    key = (tuple(c for _, c in shapes), multiple, scale)
    cached = _RADII.get(net, {})
    if key in cached:
        return cached[key]
    from diffsr.nets.exact_tiling import ExactTilingError

    probe_net = _positive_copy(net)
    probe_net.to(next(iter(net.parameters()), torch.empty(0)).device)
    channels = [c for _, c in shapes]
    radius = 0
    for axis in (0, 1):
        size, reach = 8 * multiple, None
        while reach is None and size <= limit:
            reach = _reach(fn, probe_net, channels, multiple=multiple, scale=scale, size=size, axis=axis,
                           probe=probe)
            size *= 2
        if reach is None:
            raise ExactTilingError(f"exact tiling: the net's receptive field exceeds {limit} pixels (is it global?)")
        radius = max(radius, reach)
    _RADII.setdefault(net, {})[key] = radius
    return radius


@contextmanager
def _nothing() -> Iterator[None]:
    yield
