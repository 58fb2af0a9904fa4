"""A conditional UNet denoiser: ``net(x, t, cond) -> out``, all (B, C, H, W).

Shape of the net (level 0 is the input resolution, each further level halves it)::

    [x | cond] -> in_conv (3x3, width)
      down, level i:  num_res_blocks x ResBlock(width * mult[i]) [+ attention if i in attention_levels]
                      -> skip_i ; stride-2 conv to level i + 1 (not after the last level)
      middle:         ResBlock [+ attention if the lowest level has it] ResBlock
      up, level i:    concat skip_i ; num_res_blocks x ResBlock [+ attention] ;
                      nearest x2 + 3x3 conv to level i - 1's channels (not after level 0)
    -> GroupNorm -> SiLU -> out_conv (3x3, zero-initialised)

Every ResBlock gets the timestep embedding (sinusoidal -> MLP) as a scale and shift after its
second GroupNorm (FiLM). Because ``out_conv`` starts at zero the net first outputs 0, so a
residual x0 head (x0 = condition + out) starts at the condition. Inputs whose size is not a
multiple of 2^(levels - 1) are padded (replicate) inside and cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.core.schema import Strict
from diffsr.nets.base import NETS

Size = Literal["tiny", "small", "base"]

#: size presets; ``width``/``channel_mult``/``num_res_blocks``/``attention_levels`` override them
PRESETS: dict[str, dict[str, object]] = {
    "tiny": {"width": 32, "channel_mult": (1, 2, 2), "num_res_blocks": 1, "attention_levels": ()},
    "small": {"width": 64, "channel_mult": (1, 2, 2, 4), "num_res_blocks": 1, "attention_levels": (3,)},
    "base": {"width": 128, "channel_mult": (1, 2, 2, 4), "num_res_blocks": 2, "attention_levels": (2, 3)},
}


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest number of GroupNorm groups <= ``max_groups`` that divides ``channels``.

    ``gcd`` keeps widths like 24 (-> 8 groups) or 48 (-> 16) valid where a fixed 32 fails.
    """
    return math.gcd(channels, max_groups)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with :func:`norm_groups` groups."""
    return nn.GroupNorm(norm_groups(channels), channels)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): [cos(t f_k), sin(t f_k)], f_k = max_period^(-k / half).

    Frequencies span 1 .. 1/max_period, suited to t on roughly [0, 1000].
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GN-SiLU-conv, GN-FiLM(t)-SiLU-dropout-conv, plus a (1x1 when needed) skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all positions (F.scaled_dot_product_attention), residual.

    Heads of ``head_channels`` channels when they divide ``channels``, else one head. The output
    projection starts at zero, so a new block is the identity.
    """

    def __init__(self, channels: int, head_channels: int = 32) -> None:
        super().__init__()
        self.heads = channels // head_channels if channels % head_channels == 0 else 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv to the finer level's channels (cheaper than keeping them)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """Res blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, blocks: int, attention: bool, dropout: float) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch, emb_dim, dropout) for i in range(blocks))
        self.attn = nn.ModuleList(Attention(out_ch) if attention else nn.Identity() for _ in range(blocks))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for res, attn in zip(self.res, self.attn, strict=True):
            x = attn(res(x, emb))
        return x


class UNet(nn.Module):
    """Conditional UNet: ``forward(x (B, in, H, W), t (B,), cond (B, cond, H, W)) -> (B, out, H, W)``.

    ``t`` is a float time input on roughly [0, 1000] (the process maps its own t to it). The
    condition is concatenated with ``x`` at the input. Any H, W works (padded inside).

    Args:
        in_channels, cond_channels, out_channels: channel counts (cond_channels may be 0).
        size: preset, see :data:`PRESETS` (tiny ~0.6M, small ~7M, base ~40M parameters).
        width: channels at level 0; channel_mult: per-level multipliers (levels = len);
        num_res_blocks: per level; attention_levels: level indices (0 = full resolution) with
        self-attention; each overrides the preset when given. dropout: inside ResBlocks.
    """

    def __init__(
        self,
        in_channels: int,
        cond_channels: int,
        out_channels: int,
        *,
        size: Size = "tiny",
        width: int | None = None,
        channel_mult: Sequence[int] | None = None,
        num_res_blocks: int | None = None,
        attention_levels: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if size not in PRESETS:
            raise ConfigError(f"net.size: unknown UNet size '{size}' (choose from {', '.join(PRESETS)})")
        preset = PRESETS[size]
        width = int(width if width is not None else preset["width"])  # type: ignore[call-overload]
        mult = tuple(channel_mult if channel_mult is not None else preset["channel_mult"])  # type: ignore[arg-type]
        blocks = int(num_res_blocks if num_res_blocks is not None else preset["num_res_blocks"])  # type: ignore[call-overload]
        attn = tuple(attention_levels if attention_levels is not None else preset["attention_levels"])  # type: ignore[arg-type]
        if not mult or any(m < 1 for m in mult):
            raise ConfigError(f"net.channel_mult: expected positive integers, got {list(mult)}")
        if blocks < 1:
            raise ConfigError(f"net.num_res_blocks: expected >= 1, got {blocks}")
        bad = [a for a in attn if not 0 <= a < len(mult)]
        if bad:
            raise ConfigError(f"net.attention_levels: {bad} outside levels 0..{len(mult) - 1}")

        self.in_channels, self.cond_channels, self.out_channels = in_channels, cond_channels, out_channels
        self.width, self.channel_mult, self.num_res_blocks = width, mult, blocks
        self.attention_levels = attn
        self.levels = len(mult)
        self.multiple = 2 ** (self.levels - 1)

        emb_dim = 4 * width
        self.time_embed = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.in_conv = nn.Conv2d(in_channels + cond_channels, width, 3, padding=1)

        chans = [width * m for m in mult]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = width
        for i, c in enumerate(chans):
            self.down.append(Level(ch, c, emb_dim, blocks, i in attn, dropout))
            ch = c
            if i < self.levels - 1:
                self.downsample.append(Downsample(ch))

        self.mid1 = ResBlock(ch, ch, emb_dim, dropout)
        self.mid_attn = Attention(ch) if (self.levels - 1) in attn else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_dim, dropout)

        # up path, stored from the lowest level to level 0
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            c = chans[i]
            self.up.append(Level(ch + c, c, emb_dim, blocks, i in attn, dropout))
            ch = c
            if i > 0:
                self.upsample.append(Upsample(ch, chans[i - 1]))
                ch = chans[i - 1]

        self.out_norm = group_norm(ch)
        self.out_conv = nn.Conv2d(ch, out_channels, 3, padding=1)
        # zero output at init: a residual x0 head starts exactly at the condition
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with requires_grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _check(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        if self.cond_channels:
            if cond is None or cond.shape != (b, self.cond_channels, h, w):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond: expected ({b}, {self.cond_channels}, {h}, {w}), got {got}")
        elif cond is not None and cond.shape[1] != 0:
            raise ValueError(f"cond: this UNet has cond_channels=0, got {tuple(cond.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t: expected ({b},) or a scalar, got {tuple(t.shape)}")
        return t

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """x (B, in, H, W), t (B,) on roughly [0, 1000], cond (B, cond, H, W) -> (B, out, H, W)."""
        t = self._check(x, t, cond)
        h, w = x.shape[-2:]
        if self.cond_channels:
            x = torch.cat([x, cond.to(x.dtype)], dim=1)  # type: ignore[union-attr]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        # a traced graph (ONNX export) must not bake the branch: padding by 0 is the identity
        if ph or pw or torch.jit.is_tracing():
            # replicate works for any size (reflect needs the pad smaller than the image)
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")

        emb = self.time_embed(timestep_embedding(t, self.width).to(x.dtype))
        hs = self.in_conv(x)
        skips = []
        for i, level in enumerate(self.down):
            hs = level(hs, emb)
            skips.append(hs)
            if i < self.levels - 1:
                hs = self.downsample[i](hs)
        hs = self.mid2(self.mid_attn(self.mid1(hs, emb)), emb)
        for j, level in enumerate(self.up):
            hs = level(torch.cat([hs, skips.pop()], dim=1), emb)
            if j < self.levels - 1:
                hs = self.upsample[j](hs)
        out = self.out_conv(F.silu(self.out_norm(hs)))
        return out[:, :, :h, :w]


class UNetConfig(Strict):
    """The conditional UNet denoiser; explicit fields override the ``size`` preset."""

    name: Literal["unet"] = "unet"
    size: Literal["tiny", "small", "base"] = "tiny"
    width: int | None = Field(None, ge=8)
    channel_mult: list[int] | None = None
    num_res_blocks: int | None = Field(None, ge=1)
    attention_levels: list[int] | None = None
    dropout: float = Field(0.0, ge=0, lt=1)


def _build_unet(cfg: UNetConfig, *, in_channels: int, cond_channels: int, out_channels: int, **_: object) -> UNet:
    def as_tuple(value: list[int] | None) -> tuple[int, ...] | None:
        return None if value is None else tuple(value)

    return UNet(
        in_channels,
        cond_channels,
        out_channels,
        size=cfg.size,
        width=cfg.width,
        channel_mult=as_tuple(cfg.channel_mult),
        num_res_blocks=cfg.num_res_blocks,
        attention_levels=as_tuple(cfg.attention_levels),
        dropout=cfg.dropout,
    )


NETS.register("unet", config=UNetConfig, build=_build_unet)(UNet)
