"""SRModel: codec + denoiser + process, the one object that trains and samples.

It owns nothing but the composition (DESIGN §1): encode HR and the upsampled LR condition,
noise, run the net through the process, expose z0_hat and a decode callable for the loss
stack, and sample. Everything is differentiable from the net's output to z0_hat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffsr.codecs.base import Codec, Latent, pad_to
from diffsr.config import Config
from diffsr.processes.base import Process, X0Hook


@dataclass
class StepOutputs:
    """Everything one training forward produces (latents, noise, prediction, loss)."""

    z0: Latent
    zc: Latent
    t: Tensor
    noise: Tensor
    z_t: Tensor
    out: Tensor
    z0_hat: Tensor
    diffusion: Tensor  # (B,) per-sample diffusion loss (Min-SNR weighted)


class SRModel(nn.Module):
    """Codec + conditional denoiser + process."""

    def __init__(self, codec: Codec, net: nn.Module, process: Process, channels: int) -> None:
        super().__init__()
        self.codec = codec
        self.net = net
        self.process = process
        self.channels = channels

    @property
    def is_baseline(self) -> bool:
        """True for a feed-forward baseline (EDSR / RCAN / SwinIR) that maps LR to SR directly."""
        return isinstance(self.net, BaselineDenoiser)

    # ------------------------------------------------------------------ training
    def encode_pair(self, hr: Tensor, lr_up: Tensor, lr: Tensor | None = None) -> tuple[Latent, Latent]:
        """(z0, zc): the HR target and the LR condition in the codec's space.

        A baseline also needs the LR image itself: it travels in ``zc.side["lr"]``.

        The target z0 is built without gradient: a learnable codec (wavelet layout
        ``all_learnable``) must not be trained to move its own target towards the prediction
        (the diffusion MSE would otherwise pull ``codec.down`` towards 0). The condition zc keeps
        its gradient, so the codec still learns through the condition and through the decode.
        """
        zc = self.codec.encode(lr_up)
        if self.is_baseline:
            if lr is None:
                raise ValueError("a baseline model needs the LR image (lr=...)")
            zc = Latent(zc.z, {**zc.side, "lr": lr})
        with torch.no_grad():
            z0 = self.codec.encode(hr)
        return z0, zc

    def bind_net(self, zc: Latent) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """The network as the process calls it, ``(x, t_input, cond) -> out``."""
        if self.is_baseline:
            lr = zc.side["lr"]
            return lambda x, t, cond: self.net(lr)
        return self.net

    def forward(
        self, hr: Tensor, lr_up: Tensor, generator: torch.Generator | None = None, lr: Tensor | None = None
    ) -> StepOutputs:
        """One training forward on a batch of HR / upsampled-LR images in [0, 1]."""
        z0, zc = self.encode_pair(hr, lr_up, lr)
        b = hr.shape[0]
        t = self.process.sample_t(b, hr.device, generator)
        noise = torch.randn(z0.z.shape, generator=generator, device=z0.z.device, dtype=z0.z.dtype)
        z_t = self.process.q_sample(z0.z, zc.z, t, noise)
        out = self.process.denoise(self.bind_net(zc), z_t, t, zc.z)
        z0_hat = self.process.x0(z_t, out, t, zc.z)
        diffusion = self.process.loss(out, z0.z, zc.z, t, noise)
        return StepOutputs(z0, zc, t, noise, z_t, out, z0_hat, diffusion)

    def decoder_for(self, zc: Latent) -> Callable[[Tensor, Tensor], Tensor]:
        """decode(z0_hat_rows, rows) using the condition's side information for those rows."""

        def decode(z: Tensor, index: Tensor) -> Tensor:
            return self.codec.decode(zc.select(index).with_z(z))

        return decode

    @property
    def last_layer(self) -> nn.Parameter | None:
        """The denoiser's output weight (for adaptive loss weights), if it has one."""
        conv = getattr(self.net, "out_conv", None)
        return getattr(conv, "weight", None)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        lr_up: Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        x0_hook: Callable[[Tensor, Tensor, Latent], Tensor] | None = None,
        noise: Tensor | None = None,
        lr: Tensor | None = None,
        net: Callable[..., Tensor] | None = None,
    ) -> Tensor:
        """Super-resolve a batch of upsampled LR images (B, C, H, W) in [0, 1] -> SR in [0, 1].

        Sizes that are not a multiple of the codec's factor are padded and cropped back.
        ``x0_hook(z0_hat, t, zc)`` may project each clean estimate (data consistency).
        ``net``: evaluates the denoiser in its place (e.g. tile by tile, ``nets.exact_tiling``).
        """
        net = self.net if net is None else net
        h, w = lr_up.shape[-2:]
        if self.is_baseline:  # feed-forward: LR -> SR in one pass, no padding needed
            if lr is None:
                raise ValueError("a baseline model samples from the LR image (lr=...)")
            # the net speaks the pixel codec's latent ([-1, 1]); decode it like any other z0
            z0 = net(lr)
            return self.codec.decode(Latent(z0, {}))[..., :h, :w].clamp(0, 1)
        padded, _ = pad_to(lr_up, self.codec.downsample)
        zc = self.codec.encode(padded)
        hook: X0Hook | None = None
        if x0_hook is not None:
            hook = lambda z, t: x0_hook(z, t, zc)  # noqa: E731
        z0 = self.process.sample(net, zc.z, steps=steps, generator=generator, x0_hook=hook, noise=noise)
        sr = self.codec.decode(zc.with_z(z0))
        return sr[..., :h, :w].clamp(0, 1)


class BaselineDenoiser(nn.Module):
    """A feed-forward SR network (LR [0, 1] -> SR [0, 1]) seen through the pixel codec's [-1, 1] latent."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr) * 2 - 1

    @property
    def out_conv(self) -> nn.Module | None:
        """The last convolution (for adaptive loss weights)."""
        convs = [m for m in self.net.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1] if convs else None


def build_model(config: Config) -> SRModel:
    """Build codec, net and process from a Config."""
    from diffsr.codecs import build_codec
    from diffsr.nets import build_baseline, build_net
    from diffsr.processes import build_process

    channels = config.data.channels
    if config.net.name != "unet":
        net = BaselineDenoiser(
            build_baseline(config.net.name, channels=channels, scale=config.data.scale, size=config.net.size)
        )
        return SRModel(build_codec(config.codec, channels), net, build_process(config.process), channels)
    codec = build_codec(config.codec, channels)
    latent = codec.latent_channels(channels)
    process = build_process(config.process)
    out = latent * getattr(process, "output_multiplier", 1)
    net = build_net(config.net, in_channels=latent, cond_channels=latent, out_channels=out)
    return SRModel(codec, net, process, channels)
