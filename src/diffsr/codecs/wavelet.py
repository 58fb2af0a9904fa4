"""Orthonormal 2-D discrete wavelet transforms (periodization) and the wavelet codec.

Functional API (differentiable, any channel count, float32/float64, CPU or CUDA)::

    ll, highs = dwt2(x, "haar")            # x (B, C, H, W), H and W even
    x = idwt2(ll, highs, "haar")
    coeffs = wavedec2(x, "db2", levels=2)  # [LL_2, highs_2, highs_1]
    x = waverec2(coeffs, "db2")

Coefficient layout. ``ll`` is (B, C, H/2, W/2); ``highs`` is (B, 3, C, H/2, W/2), band-major,
in PyWavelets' ``(cH, cV, cD)`` order: ``highs[:, 0]`` = cH (high-pass along H, low-pass along
W: horizontal edges), ``highs[:, 1]`` = cV (low-pass along H, high-pass along W), ``highs[:, 2]``
= cD (high-pass along both). ``highs.flatten(1, 2)`` is therefore (B, 3C, ...) ordered
[cH of every channel, cV of every channel, cD of every channel]. ``wavedec2`` returns
``[LL_L, highs_L, ..., highs_1]`` (coarsest first), exactly the order of
``pywt.wavedec2(img, wavelet, mode="periodization", level=L)`` for each image and channel.

Haar is a reshape plus butterfly adds on 2x2 blocks (no convolution):
``LL = (a + b + c + d) / 2``, ``cH = (a + b - c - d) / 2``, ``cV = (a - b + c - d) / 2``,
``cD = (a - b - c + d) / 2`` for the block ``[[a, b], [c, d]]``. Its gradient is the inverse
transform (the transform is orthonormal). Other wavelets (db2): the analysis is one stride-2
convolution on the circularly padded image, the synthesis its adjoint in polyphase form (a
stride-1 convolution from the four bands to the four 2x2 pixel phases, then a pixel shuffle).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from diffsr.codecs.base import CODECS, Codec, Latent
from diffsr.core.schema import Strict

#: analysis low-pass filters in PyWavelets' ``dec_lo`` order
_SQRT3 = math.sqrt(3.0)
_DEC_LO: dict[str, tuple[float, ...]] = {
    "haar": (1 / math.sqrt(2.0), 1 / math.sqrt(2.0)),
    "db2": tuple(v / (4 * math.sqrt(2.0)) for v in (1 - _SQRT3, 3 - _SQRT3, 3 + _SQRT3, 1 + _SQRT3)),
}
WAVELETS: tuple[str, ...] = tuple(_DEC_LO)
Layout = Literal["ll", "full", "all", "all_learnable"]
LAYOUTS: tuple[str, ...] = ("ll", "full", "all", "all_learnable")


def _check_wavelet(wavelet: str) -> None:
    if wavelet not in _DEC_LO:
        raise ValueError(f"wavelet: unknown '{wavelet}' (choose from {', '.join(WAVELETS)})")


def _check_input(x: Tensor, multiple: int, where: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{where}: expected (B, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{where}: expected a floating-point tensor, got {x.dtype}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"{where}: size {h}x{w} is not a multiple of {multiple}; pad it (diffsr.codecs.pad_to)")


def filters(wavelet: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(dec_lo, dec_hi) analysis filters in PyWavelets' order (``pywt.Wavelet(w).dec_lo``)."""
    _check_wavelet(wavelet)
    lo = _DEC_LO[wavelet]
    n = len(lo)
    hi = tuple((-1) ** (k + 1) * lo[n - 1 - k] for k in range(n))
    return lo, hi


# ----------------------------------------------------------------------------- Haar fast path


def _butterfly(u: Tensor, v: Tensor, half: bool, out_sum: Tensor, out_diff: Tensor) -> None:
    """out_sum, out_diff = u + v, u - v (each times 1/2 when ``half``), two passes either way."""
    if half:
        torch.lerp(u, v, 0.5, out=out_sum)  # (u + v) / 2
        torch.sub(u, out_sum, out=out_diff)  # u - (u + v) / 2 = (u - v) / 2
    else:
        torch.add(u, v, out=out_sum)
        torch.sub(u, v, out=out_diff)


def _haar_forward_into(x: Tensor, scale: float, ll_out: Tensor, highs_out: Tensor) -> None:
    """x (B, C, H, W) -> ll_out (B, C, H/2, W/2), highs_out (B, 3, C, H/2, W/2), times ``scale``.

    ``scale`` in {0.5, 1, 2} is folded into the butterflies (no extra pass): the orthonormal
    factor 1/2 is applied in the row butterfly, or in neither / both of them. No autograd.
    """
    b, c, h2, w2 = x.shape
    h, w = h2 // 2, w2 // 2
    xv = x.view(b, c, h, 2, w, 2)  # splitting dims is a view for any strides
    top, bottom = xv[:, :, :, 0], xv[:, :, :, 1]  # (B, C, h, w, 2): rows 2i and 2i+1
    # rows: s ~ top + bottom (low-pass along H), d ~ top - bottom (high-pass along H)
    s, d = x.new_empty(2, b, c, h, w, 2).unbind(0)
    _butterfly(top, bottom, scale <= 1.0, s, d)
    # columns (even / odd), written straight into the outputs
    _butterfly(s[..., 0], s[..., 1], scale == 0.5, ll_out, highs_out[:, 1])  # LL, cV (low H, high W)
    _butterfly(d[..., 0], d[..., 1], scale == 0.5, highs_out[:, 0], highs_out[:, 2])  # cH, cD


def _haar_inverse_into(ll: Tensor, highs: Tensor, scale: float, x_out: Tensor) -> None:
    """ll (B, C, h, w), highs (B, 3, C, h, w) -> x_out (B, C, 2h, 2w) = scale * idwt; no autograd."""
    b, c, h, w = ll.shape
    ch, cv, cd = highs[:, 0], highs[:, 1], highs[:, 2]
    # columns: s, d = (top + bottom), (top - bottom) per column parity, up to the scale
    s, d = ll.new_empty(2, b, c, h, w, 2).unbind(0)
    _butterfly(ll, cv, scale <= 1.0, s[..., 0], s[..., 1])
    _butterfly(ch, cd, scale <= 1.0, d[..., 0], d[..., 1])
    xv = x_out.view(b, c, h, 2, w, 2)
    _butterfly(s, d, scale == 0.5, xv[:, :, :, 0], xv[:, :, :, 1])  # rows 2i, 2i + 1


# ----------------------------------------------------------------------------- polyphase path


@functools.lru_cache(maxsize=64)
def _polyphase(
    wavelet: str, dtype: torch.dtype, device: torch.device, scale: float = 1.0
) -> tuple[Tensor, Tensor, int, int]:
    """Analysis / synthesis kernels (4, 4, k, k) on the 2x2 phases and the circular pads
    (the synthesis one is used: a stride-1 conv then pixel shuffle beats a transposed conv).

    PyWavelets' periodization computes ``c[i] = sum_k f[k] x[(2i + L/2 - k) mod N]`` for a
    filter of even length L. Writing ``n = 2i + L/2 - k = 2(i + t) + p`` splits it into phase
    ``p`` and tap offset ``t``; the 2-D kernel is the outer product of the row and column ones.
    Band order (LL, cH, cV, cD) = (lo-lo, hi-lo, lo-hi, hi-hi) as (along H, along W); phase order
    is ``pixel_unshuffle``'s: (row parity, column parity). Both kernels are multiplied by ``scale``.
    """
    lo, hi = filters(wavelet)
    n = len(lo)
    shift = n // 2
    taps = [(k, (shift - k) % 2, (shift - k - (shift - k) % 2) // 2) for k in range(n)]
    t_min = min(t for _, _, t in taps)
    t_max = max(t for _, _, t in taps)
    size = t_max - t_min + 1
    k1 = torch.zeros(2, 2, size, dtype=torch.float64)  # (band lo/hi, phase, tap)
    for k, p, t in taps:
        k1[0, p, t - t_min] += lo[k]
        k1[1, p, t - t_min] += hi[k]
    bands = [(0, 0), (1, 0), (0, 1), (1, 1)]  # (H band, W band) for LL, cH, cV, cD
    phases = [(0, 0), (0, 1), (1, 0), (1, 1)]
    fwd = torch.zeros(4, 4, size, size, dtype=torch.float64)
    for bi, (bh, bw) in enumerate(bands):
        for pi, (ph, pw) in enumerate(phases):
            fwd[bi, pi] = torch.outer(k1[bh, ph], k1[bw, pw])
    # synthesis = adjoint: swap band/phase and flip the taps (correlation -> convolution)
    inv = fwd.transpose(0, 1).flip(-1, -2)
    fwd, inv = ((scale * k).to(dtype=dtype, device=device) for k in (fwd, inv))
    return fwd, inv, -t_min, t_max


def _circular_pad(x: Tensor, before: int, after: int) -> Tensor:
    if before == 0 and after == 0:
        return x
    return F.pad(x, (before, after, before, after), mode="circular")


@functools.lru_cache(maxsize=64)
def _analysis(wavelet: str, dtype: torch.dtype, device: torch.device, scale: float = 1.0) -> Tensor:
    """Stride-2 analysis kernels (4, 1, L, L) for bands (LL, cH, cV, cD), times ``scale``.

    ``c[i] = sum_k f[k] x[(2i + L/2 - k) mod N]`` is a stride-2 correlation with the reversed
    filter on ``x`` circularly padded by L/2 - 1 on both sides.
    """
    lo, hi = filters(wavelet)
    rev = torch.tensor([lo[::-1], hi[::-1]], dtype=torch.float64)  # (lo/hi, L)
    bands = [(0, 0), (1, 0), (0, 1), (1, 1)]  # (H band, W band) for LL, cH, cV, cD
    kernel = torch.stack([torch.outer(rev[bh], rev[bw]) for bh, bw in bands]).unsqueeze(1)
    return (scale * kernel).to(dtype=dtype, device=device)


def _poly_forward(x: Tensor, wavelet: str, scale: float = 1.0) -> Tensor:
    """(B, C, H, W) -> packed (B, 4, C, H/2, W/2) times ``scale`` (a view); no autograd needed.

    A stride-2 convolution on the padded image: on CPU faster than phases + stride-1 conv.
    """
    b, c, h2, w2 = x.shape
    kernel = _analysis(wavelet, x.dtype, x.device, scale)
    pad = kernel.shape[-1] // 2 - 1
    y = F.conv2d(_circular_pad(x.reshape(b * c, 1, h2, w2), pad, pad), kernel, stride=2)
    return y.view(b, c, 4, h2 // 2, w2 // 2).transpose(1, 2)


def _poly_inverse(ll: Tensor, highs: Tensor, wavelet: str, scale: float = 1.0) -> Tensor:
    b, c, h, w = ll.shape
    _, inv, before, after = _polyphase(wavelet, ll.dtype, ll.device, scale)
    bands = torch.cat([ll.unsqueeze(2), highs.transpose(1, 2)], dim=2).view(b * c, 4, h, w)
    phases = F.conv2d(_circular_pad(bands, after, before), inv)
    # pixel_shuffle as one strided copy
    return phases.view(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


# ----------------------------------------------------------------------------- public functions


#: On CPU the Haar transforms run over chunks of about this many bytes (whole images, or row
#: blocks of a large one), all levels per chunk, so intermediates stay in cache: up to 2x faster
#: than whole-batch passes for batches of small images (measured on a shared 2-core machine;
#: 1-2 MiB chunks were slower with 2 threads, the extra op launches cost more than cache saves).
_CHUNK_BYTES = 1 << 22


def _chunks(x: Tensor, multiple: int) -> list[tuple[slice, slice]]:
    """(batch, row) slices of ``x`` (B, C, H, W) covering about ``_CHUNK_BYTES`` each; row
    blocks are multiples of ``multiple`` (2^levels) so every level's rows split exactly."""
    b, _, h, _ = x.shape
    if x.device.type != "cpu":
        return [(slice(0, b), slice(0, h))]
    image_bytes = x[0].numel() * x.element_size()
    if image_bytes <= _CHUNK_BYTES:
        step = _CHUNK_BYTES // image_bytes
        return [(slice(i, i + step), slice(0, h)) for i in range(0, b, step)]
    rows = max(multiple, _CHUNK_BYTES * h // image_bytes // multiple * multiple)
    return [(slice(i, i + 1), slice(r, min(r + rows, h))) for i in range(b) for r in range(0, h, rows)]


def _wavedec_raw(x: Tensor, wavelet: str, levels: int, scale: float) -> list[Tensor]:
    """[LL_L, highs_L, ..., highs_1] of ``scale * x`` (scale folded into level 1); no autograd."""
    if wavelet != "haar":
        highs: list[Tensor] = []
        ll = x
        for level in range(levels):
            packed = _poly_forward(ll, wavelet, scale if level == 0 else 1.0)
            ll = packed[:, 0]
            highs.append(packed[:, 1:])
        return [ll, *reversed(highs)]
    b, c, h, w = x.shape
    outs = [x.new_empty(b, 3, c, h >> lv, w >> lv) for lv in range(1, levels + 1)]
    ll_final = x.new_empty(b, c, h >> levels, w >> levels)
    for bs, rs in _chunks(x, 2**levels):
        cur = x[bs, :, rs]
        for level in range(1, levels + 1):
            n, _, hc, wc = cur.shape
            rows = slice(rs.start >> level, (rs.start >> level) + hc // 2)
            ll_out = ll_final[bs, :, rows] if level == levels else x.new_empty(n, c, hc // 2, wc // 2)
            _haar_forward_into(cur, scale if level == 1 else 1.0, ll_out, outs[level - 1][bs, :, :, rows])
            cur = ll_out
    return [ll_final, *reversed(outs)]


def _waverec_raw(coeffs: list[Tensor], wavelet: str, scale: float) -> Tensor:
    """``scale * waverec2(coeffs)`` (scale folded into the finest level); no autograd."""
    levels = len(coeffs) - 1
    if wavelet != "haar":
        x = coeffs[0]
        for i, highs in enumerate(coeffs[1:]):
            x = _poly_inverse(x, highs, wavelet, scale if i == levels - 1 else 1.0)
        return x
    ll = coeffs[0]
    b, c, h, w = ll.shape
    out = ll.new_empty(b, c, h << levels, w << levels)
    for bs, rs in _chunks(out, 2**levels):
        cur = ll[bs, :, rs.start >> levels : rs.stop >> levels]
        for level in range(levels, 0, -1):
            n, _, hc, wc = cur.shape
            rows = slice(rs.start >> level, (rs.start >> level) + hc)
            highs = coeffs[levels + 1 - level][bs, :, :, rows]
            target = out[bs, :, rs] if level == 1 else ll.new_empty(n, c, 2 * hc, 2 * wc)
            _haar_inverse_into(cur, highs, scale if level == 1 else 1.0, target)
            cur = target
    return out


class _WaveDec(torch.autograd.Function):
    """Multi-level analysis times ``scale``. The transform is orthonormal (periodization), so the
    backward pass is the synthesis times ``scale``: one more transform instead of autograd through
    strided ops or a (slow on CPU) transposed convolution."""

    @staticmethod
    def forward(ctx, x: Tensor, wavelet: str, levels: int, scale: float) -> tuple[Tensor, ...]:  # type: ignore[override]
        ctx.wavelet, ctx.scale = wavelet, scale
        return tuple(_wavedec_raw(x, wavelet, levels, scale))

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return _WaveRec.apply(ctx.wavelet, ctx.scale, *grads), None, None, None


class _WaveRec(torch.autograd.Function):
    """Multi-level synthesis times ``scale``; the backward pass is the analysis times ``scale``.
    The two call each other through ``apply``, so higher-order gradients work too."""

    @staticmethod
    def forward(ctx, wavelet: str, scale: float, *coeffs: Tensor) -> Tensor:  # type: ignore[override]
        ctx.wavelet, ctx.scale, ctx.levels = wavelet, scale, len(coeffs) - 1
        return _waverec_raw(list(coeffs), wavelet, scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return (None, None, *_WaveDec.apply(grad, ctx.wavelet, ctx.levels, ctx.scale))


def _haar_traceable(x: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """One Haar level of ``scale * x`` as plain tensor ops (no ``out=`` writes, no chunks)."""
    b, c, h2, w2 = x.shape
    xv = x.reshape(b, c, h2 // 2, 2, w2 // 2, 2) * (scale / 2)
    a, b_, c_, d = xv[:, :, :, 0, :, 0], xv[:, :, :, 0, :, 1], xv[:, :, :, 1, :, 0], xv[:, :, :, 1, :, 1]
    return a + b_ + c_ + d, torch.stack([a + b_ - c_ - d, a - b_ + c_ - d, a - b_ - c_ + d], 1)


def _haar_inverse_traceable(ll: Tensor, highs: Tensor, scale: float) -> Tensor:
    """The inverse of :func:`_haar_traceable` (times ``scale``) as plain tensor ops."""
    b, c, h, w = ll.shape
    ll, ch, cv, cd = ll * (scale / 2), highs[:, 0] * (scale / 2), highs[:, 1] * (scale / 2), highs[:, 2] * (scale / 2)
    top = torch.stack([ll + ch + cv + cd, ll + ch - cv - cd], -1)  # rows 2i: columns 2j, 2j + 1
    bottom = torch.stack([ll - ch + cv - cd, ll - ch - cv + cd], -1)
    return torch.stack([top, bottom], 3).reshape(b, c, 2 * h, 2 * w)


def _wavedec2(x: Tensor, wavelet: str, levels: int, scale: float = 1.0) -> list[Tensor]:
    """wavedec2 of ``scale * x``, differentiable."""
    if torch.jit.is_tracing():  # a traced graph (ONNX export): out= writes and size-dependent chunks do not trace
        if wavelet != "haar":
            return _wavedec_raw(x, wavelet, levels, scale)
        highs = []
        for level in range(levels):
            x, band = _haar_traceable(x, scale if level == 0 else 1.0)
            highs.append(band)
        return [x, *reversed(highs)]
    return list(_WaveDec.apply(x, wavelet, levels, scale))


def _waverec2(coeffs: list[Tensor], wavelet: str, scale: float = 1.0) -> Tensor:
    """``scale * waverec2(coeffs)``, differentiable."""
    if torch.jit.is_tracing():
        if wavelet != "haar":
            return _waverec_raw(coeffs, wavelet, scale)
        x = coeffs[0]
        for i, highs in enumerate(coeffs[1:]):
            x = _haar_inverse_traceable(x, highs, scale if i == len(coeffs) - 2 else 1.0)
        return x
    return _WaveRec.apply(wavelet, scale, *coeffs)


def _dwt2(x: Tensor, wavelet: str, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    ll, highs = _WaveDec.apply(x, wavelet, 1, scale)
    return ll, highs


def _idwt2(ll: Tensor, highs: Tensor, wavelet: str, scale: float = 1.0) -> Tensor:
    return _WaveRec.apply(wavelet, scale, ll, highs)


def _check_coeffs(coeffs: list[Tensor], where: str) -> None:
    if len(coeffs) < 2:
        raise ValueError(f"{where}: expected [LL, highs_L, ..., highs_1], got {len(coeffs)} tensor(s)")
    _check_input(coeffs[0], 1, f"{where}: LL")
    b, c, h, w = coeffs[0].shape
    for i, highs in enumerate(coeffs[1:]):
        expected = (b, 3, c, h << i, w << i)
        if tuple(highs.shape) != expected:
            level = len(coeffs) - 1 - i
            raise ValueError(
                f"{where}: highs of level {level} (coeffs[{i + 1}]): expected {expected}, got {tuple(highs.shape)}"
            )


def dwt2(x: Tensor, wavelet: str = "haar") -> tuple[Tensor, Tensor]:
    """One level of the orthonormal 2-D DWT with periodization.

    x: (B, C, H, W) float, H and W even. Returns ``(ll, highs)``: ll (B, C, H/2, W/2) and
    highs (B, 3, C, H/2, W/2) in (cH, cV, cD) order (see the module docstring). Equals
    ``pywt.dwt2(img, wavelet, mode="periodization")`` per image and channel.
    """
    _check_wavelet(wavelet)
    _check_input(x, 2, "dwt2")
    return _dwt2(x, wavelet)


def idwt2(ll: Tensor, highs: Tensor, wavelet: str = "haar") -> Tensor:
    """Inverse of :func:`dwt2`: ll (B, C, h, w), highs (B, 3, C, h, w) -> (B, C, 2h, 2w)."""
    _check_wavelet(wavelet)
    _check_coeffs([ll, highs], "idwt2")
    return _idwt2(ll, highs, wavelet)


def wavedec2(x: Tensor, wavelet: str = "haar", levels: int = 1) -> list[Tensor]:
    """Multi-level DWT: ``[LL_L, highs_L, ..., highs_1]`` (coarsest first, like pywt.wavedec2).

    x: (B, C, H, W) with H and W multiples of ``2 ** levels`` (else ValueError naming the size).
    highs_l is (B, 3, C, H / 2**l, W / 2**l) in (cH, cV, cD) order.
    """
    if levels < 1:
        raise ValueError(f"wavedec2: levels must be >= 1, got {levels}")
    _check_wavelet(wavelet)
    _check_input(x, 2**levels, "wavedec2")
    return _wavedec2(x, wavelet, levels)


def waverec2(coeffs: list[Tensor], wavelet: str = "haar") -> Tensor:
    """Inverse of :func:`wavedec2`: ``[LL_L, highs_L, ..., highs_1]`` -> (B, C, H, W)."""
    _check_wavelet(wavelet)
    _check_coeffs(coeffs, "waverec2")
    return _waverec2(coeffs, wavelet)


# ----------------------------------------------------------------------------- the codec


class WaveletConfig(Strict):
    """Orthonormal wavelet subbands (parameter-free, lossless except ``all_learnable``)."""

    name: Literal["wavelet"] = "wavelet"
    wavelet: Literal["haar", "db2"] = "haar"
    levels: int = Field(2, ge=1, le=3)
    layout: Literal["ll", "full", "all", "all_learnable"] = "all"


@CODECS.register("wavelet", config=WaveletConfig)
class WaveletCodec(Codec):
    """Images in [0, 1] <-> orthonormal wavelet coefficients of ``2x - 1`` at level L.

    The coarsest LL band is divided by ``2 ** levels`` (it is then the local mean of 2x - 1,
    in [-1, 1]); decode multiplies it back, so every layout except ``all_learnable`` is exactly
    invertible. ``downsample = 2 ** levels``. Latent channel orders (C image channels, "highs_l"
    = (cH, cV, cD) of level l, band-major, channel-minor):

    - ``ll``: z = [LL_L] (C). Every high band travels in ``Latent.side["highs{l}"]``
      (B, 3, C, H/2^l, W/2^l), l = 1 (finest) .. L; decode uses the side of the latent it gets
      (the trainer decodes a prediction with the condition's side: ``zc.with_z(z0_hat)``).
    - ``full``: z = [LL_L, cH_L, cV_L, cD_L] (4C); side holds highs{l} for l < L.
    - ``all``: z = [LL_L (C), highs_L (3C), fold(highs_{L-1}) (12C), fold(highs_{L-2}) (48C)],
      fold = ``pixel_unshuffle`` by 2^(L-l), so channel (band * C + c) * r^2 + dy * r + dx holds
      pixel (r * i + dy, r * j + dx) of band ``band`` of channel ``c``; 4^L C channels, side
      empty, lossless.
    - ``all_learnable``: z = [LL_L (C), highs_L (3C), down_{L-1}(highs_{L-1}) (3C), ...,
      down_1(highs_1) (3C)] = C + 3CL channels; down_l is a learnable bias-free
      Conv2d(3C, 3C, kernel = stride = 2^(L-l)) initialised as average pooling, decoded by a
      ConvTranspose2d initialised as nearest upsampling (lossy; the seed-004 variant).
    """

    def __init__(self, wavelet: str = "haar", levels: int = 2, layout: Layout = "all", channels: int = 1) -> None:
        super().__init__()
        _check_wavelet(wavelet)
        if not 1 <= levels <= 3:
            raise ValueError(f"codec.levels: expected 1..3, got {levels}")
        if layout not in LAYOUTS:
            raise ValueError(f"codec.layout: unknown '{layout}' (choose from {', '.join(LAYOUTS)})")
        if channels < 1:
            raise ValueError(f"codec channels: expected >= 1, got {channels}")
        self.wavelet = wavelet
        self.levels = levels
        self.layout = layout
        self.channels = channels
        self.downsample = 2**levels
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        if layout == "all_learnable":
            width = 3 * channels
            for level in range(levels - 1, 0, -1):  # L-1 (coarsest folded) .. 1 (finest)
                r = 2 ** (levels - level)
                down = nn.Conv2d(width, width, kernel_size=r, stride=r, bias=False)
                up = nn.ConvTranspose2d(width, width, kernel_size=r, stride=r, bias=False)
                eye = torch.eye(width).view(width, width, 1, 1)
                with torch.no_grad():
                    down.weight.copy_(eye.expand(-1, -1, r, r) / r**2)  # average pooling
                    up.weight.copy_(eye.expand(-1, -1, r, r))  # nearest upsampling
                self.down.append(down)
                self.up.append(up)
        self.is_learned = len(self.down) > 0
        self.is_lossless = not self.is_learned

    def extra_repr(self) -> str:
        return f"wavelet={self.wavelet!r}, levels={self.levels}, layout={self.layout!r}"

    def latent_channels(self, channels: int) -> int:
        """C (ll), 4C (full), 4^L C (all), C + 3CL (all_learnable)."""
        return {
            "ll": channels,
            "full": 4 * channels,
            "all": 4**self.levels * channels,
            "all_learnable": channels + 3 * channels * self.levels,
        }[self.layout]

    def _image_channels(self, z: Tensor) -> int:
        per = self.latent_channels(1)
        if z.ndim != 4 or z.shape[1] % per:
            raise ValueError(f"decode: layout '{self.layout}' expects (B, {per}*C, h, w) latents, got {tuple(z.shape)}")
        c = z.shape[1] // per
        if self.layout == "all_learnable" and c != self.channels:
            raise ValueError(
                f"decode: codec built for {self.channels} channel(s) "
                f"({self.latent_channels(self.channels)} latent channels), got {tuple(z.shape)}"
            )
        return c

    def encode(self, x: Tensor) -> Latent:
        """Image (B, C, H, W) in [0, 1], H and W multiples of ``downsample`` -> Latent."""
        _check_input(x, self.downsample, "encode")
        if self.layout == "all_learnable" and x.shape[1] != self.channels:
            raise ValueError(f"encode: codec built for {self.channels} channel(s), got {tuple(x.shape)}")
        big_l = self.levels
        # wavedec2(2x - 1): the factor 2 is folded into the first level's butterflies, and the
        # constant -1 only moves LL_L, by -2^L (the LL_L of an all-ones image is 2^L)
        coeffs = _wavedec2(x, self.wavelet, big_l, scale=2.0)
        ll = coeffs[0] / 2**big_l - 1
        # coeffs[i] for i >= 1 holds the highs of level L + 1 - i
        highs = {big_l + 1 - i: coeffs[i] for i in range(1, big_l + 1)}
        if self.layout == "ll":
            return Latent(ll, {f"highs{lv}": h for lv, h in highs.items()})
        top = highs[big_l].flatten(1, 2)
        if self.layout == "full":
            side = {f"highs{lv}": h for lv, h in highs.items() if lv < big_l}
            return Latent(torch.cat([ll, top], dim=1), side)
        if self.layout == "all_learnable":
            parts = [ll, top]
            for i, level in enumerate(range(big_l - 1, 0, -1)):
                parts.append(self.down[i](highs[level].flatten(1, 2)))
            return Latent(torch.cat(parts, dim=1), {})
        # "all": each part copied once into z; the fold is pixel_unshuffle written as a strided
        # copy (several times faster than F.pixel_unshuffle + cat on CPU); a traced graph concatenates
        b, c, h, w = ll.shape
        if torch.jit.is_tracing():
            folded = [highs[lv].flatten(1, 2).reshape(b, 3 * c, h, 2 ** (big_l - lv), w, 2 ** (big_l - lv))
                      .permute(0, 1, 3, 5, 2, 4).reshape(b, -1, h, w) for lv in range(big_l - 1, 0, -1)]
            return Latent(torch.cat([ll, top, *folded], dim=1), {})
        z = ll.new_empty(b, self.latent_channels(c), h, w)
        z[:, :c] = ll
        z[:, c : 4 * c] = top
        start = 4 * c
        for level in range(big_l - 1, 0, -1):
            r = 2 ** (big_l - level)
            n = 3 * c * r * r
            z[:, start : start + n].view(b, 3 * c, r, r, h, w).copy_(
                highs[level].reshape(b, 3 * c, h, r, w, r).permute(0, 1, 3, 5, 2, 4)
            )
            start += n
        return Latent(z, {})

    def decode(self, latent: Latent) -> Tensor:
        """Latent -> image (B, C, H, W); differentiable in ``latent.z`` (and in the side)."""
        z = latent.z
        c = self._image_channels(z)
        b, _, h, w = z.shape
        big_l = self.levels
        # y = waverec2(coeffs) and x = (y + 1) / 2 = waverec2(coeffs + coeffs of an all-ones
        # image) / 2: +1 moves LL_L by 2^L, the 1/2 is folded into the finest level
        ll = (z[:, :c] + 1) * 2**big_l
        highs: dict[int, Tensor] = {}
        if self.layout in ("full", "all", "all_learnable"):
            highs[big_l] = z[:, c : 4 * c].unflatten(1, (3, c))
        if self.layout in ("all", "all_learnable"):
            start = 4 * c
            for i, level in enumerate(range(big_l - 1, 0, -1)):
                r = 2 ** (big_l - level)
                if self.layout == "all":
                    n = 3 * c * r * r
                    # inverse fold (pixel_shuffle) as one strided copy
                    h_level = (
                        z[:, start : start + n]
                        .unflatten(1, (3 * c, r, r))
                        .permute(0, 1, 4, 2, 5, 3)
                        .reshape(b, 3 * c, h * r, w * r)
                    )
                else:
                    n = 3 * c
                    h_level = self.up[i](z[:, start : start + n])
                highs[level] = h_level.unflatten(1, (3, c))
                start += n
        for level in range(1, big_l + 1):
            if level in highs:
                continue
            key = f"highs{level}"
            if key not in latent.side:
                raise ValueError(
                    f"decode: layout '{self.layout}' needs side['{key}'] from encode "
                    f"(got keys {sorted(latent.side)}); decode with the condition's latent.with_z(z)"
                )
            side = latent.side[key]
            expected = (b, 3, c, h * 2 ** (big_l - level), w * 2 ** (big_l - level))
            if tuple(side.shape) != expected:
                raise ValueError(f"decode: side['{key}']: expected {expected}, got {tuple(side.shape)}")
            highs[level] = side
        return _waverec2([ll, *(highs[level] for level in range(big_l, 0, -1))], self.wavelet, scale=0.5)
