"""SSIM and MS-SSIM with a Gaussian window, masks and a hand-written backward.

Conventions (Wang et al. 2004, as skimage ``gaussian_weights=True, use_sample_covariance=False``
and pytorch_msssim):

- Gaussian window ``window`` x ``window`` (default 11, sigma 1.5, normalised to sum 1), applied
  as two 1-D 'valid' filters: the map has shape (B, C, H - w + 1, W - w + 1), i.e. only windows
  that lie wholly inside the image (skimage computes the full map and crops (w - 1) / 2 pixels).
- C1 = (K1 data_range)^2, C2 = (K2 data_range)^2 with K1 = 0.01, K2 = 0.03. ``data_range`` is
  keyword-only and has no default: 1.0 for images in [0, 1], 255 for 8-bit, 4095 for 12-bit CT.
- Computed in float32 (float64 stays float64), with autocast disabled: the variances are
  differences of nearly equal numbers and lose every digit in fp16/bf16.
- Images smaller than the window: the window shrinks to the largest odd size >= 3 that fits
  min(H, W) (sigma unchanged). Images under 3 pixels are an error.
- Masks (B, 1, H, W), 1 = valid: a map position counts only if its whole window lies inside the
  mask (the mask is eroded by the window: a min-pool), so padding never leaks into the
  statistics. Per sample, SSIM is the weighted mean of the map over channels and counted
  positions; a sample without a single whole window inside its mask gets SSIM 1 (loss 0).

Speed: the five statistics (x, y, x^2, y^2, xy) are filtered together (one stacked tensor, one
separable depthwise filter pass, channels folded into the group dimension), and :func:`ssim` /
:func:`ms_ssim` reduce inside a custom autograd function whose backward is written by hand
(the gradient of the map mean w.r.t. the five statistics, then the adjoint filter, as in
Avanaki 2009): a handful of fused elementwise kernels instead of the ~40 that autograd records,
and no gradient for ``y`` when the target needs none. ``benchmarks/ssim.py`` measures it.
That backward is not itself differentiable (no double backward through :func:`ssim`);
:func:`ssim_map` uses plain autograd and is.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from diffsr.core.errors import ConfigError
from diffsr.core.shapes import check_image, check_mask
from diffsr.losses.base import TERMS, TermBase

__all__ = [
    "MSSSIM_WEIGHTS",
    "MSSSIMLoss",
    "SSIMLoss",
    "fit_window",
    "gaussian_window",
    "ms_ssim",
    "msssim_levels",
    "ssim",
    "ssim_map",
]

#: MS-SSIM scale weights (Wang et al. 2003; pytorch_msssim), finest scale first
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

Reduction = Literal["mean", "none"]


def gaussian_window(
    size: int, sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """1-D Gaussian window (size,), centred, normalised to sum 1 (computed in float64)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def fit_window(window: int, h: int, w: int) -> int:
    """The window actually used for an H x W image: ``window``, or the largest odd size >= 3 that fits."""
    if window < 3 or window % 2 == 0:
        raise ValueError(f"ssim: window must be odd and >= 3, got {window}")
    side = min(h, w)
    if side < 3:
        raise ValueError(f"ssim: image {h}x{w} is smaller than the minimum 3x3 window")
    if side >= window:
        return window
    return side if side % 2 else side - 1


def _blur_valid(s: Tensor, g: Tensor) -> Tensor:
    """Separable 'valid' filter of planes (K, H, W) -> (K, H - w + 1, W - w + 1), one depthwise conv pair."""
    k, size = s.shape[0], g.numel()
    h = s.shape[1] - size + 1
    if s.dtype == torch.float64 and s.device.type == "cpu" and not s.requires_grad and h > 64:
        # float64 on CPU (the evaluation metric) runs as im2col + matrix products: over bands of
        # 32 output rows the intermediates stay in cache, about 2x faster; each output is the
        # same sum in the same order, so bitwise the whole-plane result
        out = s.new_empty(k, h, s.shape[2] - size + 1)
        for r in range(0, h, 32):
            out[:, r : r + 32] = _blur_valid(s[:, r : min(r + 32, h) + size - 1], g)
        return out
    out = F.conv2d(s[None], g.view(1, 1, 1, size).expand(k, 1, 1, size), groups=k)
    return F.conv2d(out, g.view(1, 1, size, 1).expand(k, 1, size, 1), groups=k)[0]


def _statistics(x: Tensor, y: Tensor, g: Tensor) -> tuple[Tensor, ...]:
    """Filtered mx, my, E[x^2], E[y^2], E[xy] of (B, C, H, W) images, all five in one filter pass."""
    b, c, h, w = x.shape
    stack = x.new_empty(5, b, c, h, w)
    stack[0] = x
    stack[1] = y
    torch.mul(x, x, out=stack[2])
    torch.mul(y, y, out=stack[3])
    torch.mul(x, y, out=stack[4])
    out = _blur_valid(stack.view(5 * b * c, h, w), g)
    return out.view(5, b, c, *out.shape[-2:]).unbind(0)


def _terms(stats: tuple[Tensor, ...], c1: float, c2: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A1 = 2 mx my + C1, A2 = 2 cov + C2, B1 = mx^2 + my^2 + C1, B2 = vx + vy + C2.

    Written so that x == y gives A1 == B1 and A2 == B2 bit for bit (SSIM exactly 1): the same
    rounded products on both sides, and sums of equal terms that double exactly.
    """
    mx, my, exx, eyy, exy = stats
    mxy, mx2, my2 = mx * my, mx * mx, my * my
    a1 = torch.add(mx.new_tensor(c1), mxy, alpha=2)
    b1 = torch.add(mx2, my2).add_(c1)
    a2 = torch.add(mx.new_tensor(c2), exy.sub(mxy), alpha=2)
    b2 = torch.sub(exx, mx2).add_(eyy.sub(my2)).add_(c2)
    return a1, a2, b1, b2


def _forward_maps(x: Tensor, y: Tensor, g: Tensor, c1: float, c2: float) -> tuple[Tensor, ...]:
    """Images (B, C, H, W) -> (mx, my, A1, A2, B1, B2, CS, S), each (B, C, h, w)."""
    mx, my, *_ = stats = _statistics(x, y, g)
    a1, a2, b1, b2 = _terms(stats, c1, c2)
    cs = a2 / b2
    s = torch.mul(a1, cs).div_(b1)
    return mx, my, a1, a2, b1, b2, cs, s


def _map_means(s: Tensor, cs: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) means (B, C) of two maps, weighted by ``weight`` (B, 1, h, w) summing to 1."""
    if weight is None:
        return s.mean(dim=(-2, -1)), cs.mean(dim=(-2, -1))
    return (s * weight).sum(dim=(-2, -1)), (cs * weight).sum(dim=(-2, -1))


def _backward_maps(
    x: Tensor,
    y: Tensor,
    maps: tuple[Tensor, ...],
    gs2: Tensor | None,
    gcs2: Tensor | None,
    g: Tensor,
    need_x: bool,
    need_y: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients w.r.t. x, y (B, C, H, W) given the upstream gradients of the S and CS maps.

    gs2, gcs2: twice the upstream gradient of each map position, broadcastable to (B, C, h, w).
    """
    mx, my, a1, a2, b1, b2, cs = maps[:7]
    m = 2 + int(need_x) + int(need_y)
    # The adjoint of the 'valid' filter is a 'full' filter: a valid filter of the maps zero-padded
    # by size - 1, which runs ~3x faster than conv_transpose2d on CPU. Write into the interior.
    pad = g.numel() - 1
    hv, wv = a1.shape[-2:]
    padded = a1.new_empty(m, *a1.shape[:-2], hv + 2 * pad, wv + 2 * pad)
    padded[..., :pad, :] = 0
    padded[..., -pad:, :] = 0
    padded[..., pad:-pad, :pad] = 0
    padded[..., pad:-pad, -pad:] = 0
    grads = padded[..., pad:-pad, pad:-pad]
    # twice the gradients w.r.t. A1, A2, B1, B2 (buffers 0 and 1 hold 2 dB2 and 2 dA2)
    da2, db2 = grads[1], grads[0]
    if gs2 is not None:
        k = torch.div(gs2, b1).div_(b2)
        da1 = k * a2
        torch.mul(k, a1, out=da2)
        u = da1 * a1
        db1 = torch.div(u, b1).neg_()
        torch.div(u, b2, out=db2).neg_()
    else:
        da1 = db1 = None
        da2.zero_()
        db2.zero_()
    if gcs2 is not None:
        t = torch.div(gcs2, b2)
        da2.add_(t)
        db2.sub_(t.mul_(cs))
    # d/d(mx) = 2 my (dA1 - dA2) + 2 mx (dB1 - dB2); d/d(exx) = d/d(eyy) = dB2; d/d(exy) = 2 dA2
    if da1 is not None and db1 is not None:
        p, q = da1.sub_(da2), db1.sub_(db2)
    else:
        p, q = da2.neg(), db2.neg()
    i = 2
    if need_x:
        torch.mul(my, p, out=grads[i]).addcmul_(mx, q)
        i += 1
    if need_y:
        torch.mul(mx, p, out=grads[i]).addcmul_(my, q)
    full = _blur_valid(padded.view(-1, *padded.shape[-2:]), g).view(m, *x.shape)
    # E[x^2] enters the gradient of x as 2 x dB2 = x (2 dB2); E[xy] as y (2 dA2)
    ge, gxy = full[0], full[1]
    grad_x = grad_y = None
    i = 2
    if need_x:
        grad_x = full[i].addcmul_(x, ge).addcmul_(y, gxy)
        i += 1
    if need_y:
        grad_y = full[i].addcmul_(y, ge).addcmul_(x, gxy)
    return grad_x, grad_y


# On CPU the batch is processed in groups of samples of about this many pixels (x channels), so
# that a group's maps stay closer to cache: measured ~1.4x less CPU time for 8 x 3 x 256 x 256
# on one thread than one pass over the whole batch (no difference for 8 x 1 x 256 x 256, which
# is a single group).
_CPU_CHUNK_PIXELS = 1 << 20


def _sample_chunks(x: Tensor) -> list[slice]:
    b, c, h, w = x.shape
    if x.device.type != "cpu":
        return [slice(0, b)]
    step = max(1, _CPU_CHUNK_PIXELS // (c * h * w))
    return [slice(i, min(i + step, b)) for i in range(0, b, step)]


class _SSIMMeans(torch.autograd.Function):
    """(x, y, weight) -> weighted means (B, C) of the SSIM and contrast-structure maps.

    S = A1 A2 / (B1 B2), CS = A2 / B2 over 'valid' windows. ``weight`` (B, 1, h, w) sums to 1 per
    sample (None: uniform). The full-size maps never leave the function; the forward keeps
    those the backward needs (recomputing them measured slower).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, x: Tensor, y: Tensor, weight: Tensor | None, g: Tensor, c1: float, c2: float
    ) -> tuple[Tensor, Tensor]:
        parts = _sample_chunks(x)
        saved: list[Tensor] = []
        s_means, cs_means = [], []
        for part in parts:
            maps = _forward_maps(x[part], y[part], g, c1, c2)
            saved.extend(maps[:-1])  # S itself is not needed
            s_mean, cs_mean = _map_means(maps[-1], maps[-2], None if weight is None else weight[part])
            s_means.append(s_mean)
            cs_means.append(cs_mean)
        ctx.parts = parts  # type: ignore[attr-defined]
        ctx.save_for_backward(x, y, weight, g, *saved)
        ctx.set_materialize_grads(False)
        return torch.cat(s_means), torch.cat(cs_means)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, gs: Tensor | None, gcs: Tensor | None) -> tuple[Tensor | None, ...]:
        x, y, weight, g, *saved = ctx.saved_tensors  # type: ignore[attr-defined]
        need_x, need_y = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        if (gs is None and gcs is None) or not (need_x or need_y):
            return None, None, None, None, None, None
        h, w = saved[0].shape[-2:]
        grad_x = torch.empty_like(x) if need_x else None
        grad_y = torch.empty_like(y) if need_y else None
        for i, part in enumerate(ctx.parts):  # type: ignore[attr-defined]
            # upstream gradient per map position, times 2 (the factor of dA/dm and dA2/dexy)
            scale = 2.0 / (h * w) if weight is None else 2.0 * weight[part]
            gs2 = None if gs is None else gs[part][:, :, None, None] * scale
            gcs2 = None if gcs is None else gcs[part][:, :, None, None] * scale
            maps = tuple(saved[7 * i : 7 * i + 7])
            gx, gy = _backward_maps(x[part], y[part], maps, gs2, gcs2, g, need_x, need_y)
            if grad_x is not None:
                grad_x[part] = gx
            if grad_y is not None:
                grad_y[part] = gy
        return grad_x, grad_y, None, None, None, None


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_pair(x: Tensor, y: Tensor) -> None:
    check_image(x, "x")
    if x.shape != y.shape:
        raise ValueError(f"y: expected {tuple(x.shape)} like x, got {tuple(y.shape)}")


def _constants(data_range: float, k1: float, k2: float) -> tuple[float, float]:
    return (k1 * data_range) ** 2, (k2 * data_range) ** 2


def ssim_map(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """The SSIM map (B, C, H - w + 1, W - w + 1) over whole windows ('valid'), w the fitted window.

    x, y: (B, C, H, W). Result in float32 (float64 for float64 inputs). Differentiable through
    plain autograd; :func:`ssim` and :func:`ms_ssim` take a faster fused path for the means.
    """
    _check_pair(x, y)
    b, c, h, w = x.shape
    size = fit_window(window, h, w)
    c1, c2 = _constants(data_range, k1, k2)
    dtype = _compute_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        g = gaussian_window(size, sigma, dtype, x.device)
        xp, yp = x.to(dtype).reshape(b * c, h, w), y.to(dtype).reshape(b * c, h, w)
        stack = torch.cat([xp, yp, xp * xp, yp * yp, xp * yp])
        mx, my, exx, eyy, exy = _blur_valid(stack, g).view(5, b * c, h - size + 1, w - size + 1).unbind(0)
        a1, a2, b1, b2 = _terms((mx, my, exx, eyy, exy), c1, c2)
        return (a1 * a2 / (b1 * b2)).view(b, c, h - size + 1, w - size + 1)


def _erode(mask: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """(B, 1, H, W) -> (B, 1, H - size + 1, W - size + 1): the minimum of the mask over each window."""
    b, _, h, w = mask.shape
    if bool((mask == 1).all()):  # the common case (no padding): skip the pooling
        return mask.new_ones((b, 1, h - size + 1, w - size + 1), dtype=dtype)
    # a square min-pool is two 1-D min-pools (separable), ~3x cheaper than one 2-D pool
    m = -F.max_pool2d(-mask.to(dtype), (size, 1), stride=1)
    return -F.max_pool2d(-m, (1, size), stride=1)


def _means(
    x: Tensor, y: Tensor, mask: Tensor | None, size: int, sigma: float, c1: float, c2: float
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-(sample, channel) means (B, C) of the SSIM and CS maps, and where the mask holds a window.

    x, y are already in the compute dtype with autocast off. Returns (s, cs, valid) with valid
    (B, 1) bool or None without a mask; the means of a sample without a valid window are 0.
    """
    g = gaussian_window(size, sigma, x.dtype, x.device)
    if mask is None:
        return (*_SSIMMeans.apply(x, y, None, g, c1, c2), None)
    eroded = _erode(mask, size, x.dtype)
    total = eroded.sum(dim=(-2, -1), keepdim=True)
    weight = eroded / total.clamp_min(torch.finfo(x.dtype).tiny)
    s, cs = _SSIMMeans.apply(x, y, weight, g, c1, c2)
    return s, cs, total.view(-1, 1) > 0


def _reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def ssim(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float,
    mask: Tensor | None = None,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: Reduction = "mean",
) -> Tensor:
    """Gaussian-window SSIM (sigma 1.5, K1 0.01, K2 0.03), in >= float32.

    x, y: (B, C, H, W). data_range: max - min, e.g. 1.0, or 4095.0 for 12-bit CT.
    mask: (B, 1, H, W), 1 on valid pixels; only windows wholly inside the mask count (a sample
    with none gets 1). Returns () for "mean", (B,) for "none" (the mean over channels and map
    positions).
    """
    _check_pair(x, y)
    check_mask(mask, x)
    size = fit_window(window, x.shape[-2], x.shape[-1])
    c1, c2 = _constants(data_range, k1, k2)
    dtype = _compute_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        s, _, valid = _means(x.to(dtype), y.to(dtype), mask, size, sigma, c1, c2)
        per_sample = s.mean(dim=1)
        if valid is not None:
            per_sample = torch.where(valid[:, 0], per_sample, 1.0)
    return _reduce(per_sample, reduction)


def _pow_relu(v: Tensor, exponent: float) -> Tensor:
    """relu(v) ** exponent with a zero (not NaN) gradient where v <= 0."""
    positive = v > 0
    return torch.where(positive, v.clamp_min(torch.finfo(v.dtype).tiny) ** exponent, 0.0)


def msssim_levels(h: int, w: int, window: int, max_levels: int = len(MSSSIM_WEIGHTS)) -> int:
    """Number of MS-SSIM scales for an H x W image: every scale keeps at least ``window`` pixels a side."""
    levels = 1
    while levels < max_levels:
        h, w = (h + 1) // 2, (w + 1) // 2  # avg-pool 2 with padding H % 2 (pytorch_msssim)
        if min(h, w) < window:
            break
        levels += 1
    return levels


def ms_ssim(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float,
    mask: Tensor | None = None,
    window: int = 11,
    sigma: float = 1.5,
    weights: tuple[float, ...] | list[float] | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: Reduction = "mean",
) -> Tensor:
    """Multi-scale SSIM as pytorch_msssim: prod_l relu(cs_l)^w_l * relu(ssim_L)^w_L, mean over channels.

    Scales are 2x average-pooled (padding H % 2, W % 2, as pytorch_msssim). The full five scales
    need min(H, W) >= 16 (window - 1) + 1 (161 px for window 11); a smaller image uses as many
    scales as keep ``window`` pixels a side, with the first weights renormalised to sum 1 (a
    single scale is relu(SSIM), with a shrunk window if needed). A mask is min-pooled between
    scales (a coarse pixel is valid only if all its fine pixels are) and eroded by the window at
    each scale, as in :func:`ssim`; a scale without a valid window contributes a factor 1.
    """
    _check_pair(x, y)
    check_mask(mask, x)
    w_all = tuple(MSSSIM_WEIGHTS if weights is None else weights)
    h, w = x.shape[-2:]
    levels = msssim_levels(h, w, window, len(w_all))
    size = fit_window(window, h, w) if levels == 1 else window
    total = sum(w_all[:levels])
    level_weights = [v / total for v in w_all[:levels]]
    c1, c2 = _constants(data_range, k1, k2)
    dtype = _compute_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.to(dtype), y.to(dtype)
        m = None if mask is None else mask.to(dtype)
        value: Tensor | None = None
        for level, exponent in enumerate(level_weights):
            last = level == levels - 1
            s, cs, valid = _means(x, y, m, size, sigma, c1, c2)
            per_channel = s if last else cs
            if valid is not None:
                per_channel = torch.where(valid, per_channel, 1.0)
            term = _pow_relu(per_channel, exponent)
            value = term if value is None else value * term
            if not last:
                padding = (x.shape[-2] % 2, x.shape[-1] % 2)
                x = F.avg_pool2d(x, kernel_size=2, padding=padding)
                y = F.avg_pool2d(y, kernel_size=2, padding=padding)
                if m is not None:
                    m = -F.max_pool2d(-m, kernel_size=2, padding=padding)
    assert value is not None
    return _reduce(value.mean(dim=1), reduction)


def _check_module_args(window: int, sigma: float, data_range: float) -> None:
    if window < 3 or window % 2 == 0:
        raise ConfigError(f"ssim window must be odd and >= 3, got {window}")
    if sigma <= 0 or data_range <= 0:
        raise ConfigError(f"ssim sigma and data_range must be > 0, got {sigma} and {data_range}")


class SSIMLoss(nn.Module):
    """Per-sample 1 - SSIM (B,) (not kornia's (1 - SSIM) / 2)."""

    def __init__(self, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> None:
        super().__init__()
        _check_module_args(window, sigma, data_range)
        self.window, self.sigma, self.data_range = window, sigma, data_range

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return 1 - ssim(
            pred, target, data_range=self.data_range, mask=mask, window=self.window, sigma=self.sigma,
            reduction="none",
        )

    def extra_repr(self) -> str:
        return f"window={self.window}, sigma={self.sigma}, data_range={self.data_range}"


class MSSSIMLoss(nn.Module):
    """Per-sample 1 - MS-SSIM (B,)."""

    def __init__(
        self,
        window: int = 11,
        sigma: float = 1.5,
        data_range: float = 1.0,
        weights: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        _check_module_args(window, sigma, data_range)
        self.window, self.sigma, self.data_range = window, sigma, data_range
        self.weights = tuple(MSSSIM_WEIGHTS if weights is None else weights)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return 1 - ms_ssim(
            pred, target, data_range=self.data_range, mask=mask, window=self.window, sigma=self.sigma,
            weights=self.weights, reduction="none",
        )

    def extra_repr(self) -> str:
        return f"window={self.window}, sigma={self.sigma}, data_range={self.data_range}"

class SSIMTerm(TermBase):
    """1 - SSIM or 1 - MS-SSIM (Gaussian window, sigma 1.5) in pixel space."""

    name: Literal["ssim", "msssim"]
    window: int = Field(11, ge=3)
    sigma: float = Field(1.5, gt=0)
    data_range: float = Field(1.0, gt=0)


@TERMS.register("ssim", config=SSIMTerm, space="pixel")
def _build_ssim(cfg: SSIMTerm, **_: Any) -> nn.Module:
    return SSIMLoss(window=cfg.window, sigma=cfg.sigma, data_range=cfg.data_range)


@TERMS.register("msssim", config=SSIMTerm, space="pixel")
def _build_msssim(cfg: SSIMTerm, **_: Any) -> nn.Module:
    return MSSSIMLoss(window=cfg.window, sigma=cfg.sigma, data_range=cfg.data_range)
