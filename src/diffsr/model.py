"""SRModel: codec + denoiser + process, the one object that trains and samples.

It owns the composition (DESIGN §1) and nothing else: encode HR and the upsampled LR condition,
noise, run the net through the process, expose z0_hat and a decode callable for the loss stack,
and sample. :meth:`SRModel.forward` is THE training forward: the trainer, one-step
distillation and the gradient audits all call it, so there is one place where a training step's
numbers are made. Everything from the net's output to z0_hat is differentiable.

Also here: :func:`build_model` (from a config, through the registries' capabilities) and the
weight-state helpers a checkpoint uses (:func:`trainable_state`, :func:`load_trainable_state`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from diffsr.codecs.base import Codec, Latent, pad_to
from diffsr.config import Config
from diffsr.core.errors import CheckpointError
from diffsr.processes.base import Process, X0Hook

__all__ = [
    "BaselineDenoiser",
    "SRModel",
    "StepOutputs",
    "build_model",
    "load_trainable_state",
    "stack_inputs",
    "trainable_state",
]


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
        self,
        hr: Tensor,
        lr_up: Tensor,
        generator: torch.Generator | None = None,
        lr: Tensor | None = None,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        one_step: bool = False,
        autocast: Callable[[], Any] | None = None,
    ) -> StepOutputs:
        """THE training forward on a batch of HR / upsampled-LR images in [0, 1].

        t, noise: the step's timesteps (B,) and noise (the latent's shape); drawn from
        ``generator`` when not given (t first, then the noise). one_step: train the one-step
        sampler instead of a random timestep: the input is the process's starting point
        (:meth:`~diffsr.processes.base.Process.one_step_start`) and the diffusion loss is the
        latent-space MSE of z0_hat (one-step distillation). autocast: a context factory for the
        mixed-precision part (the network, z0_hat and the diffusion loss).
        """
        b = hr.shape[0]
        if not one_step and t is None:
            t = self.process.sample_t(b, hr.device, generator)
        z0, zc = self.encode_pair(hr, lr_up, lr)
        if noise is None:
            noise = torch.randn(z0.z.shape, generator=generator, device=z0.z.device, dtype=z0.z.dtype)
        with (autocast or contextlib.nullcontext)():
            if one_step:
                z_t, t = self.process.one_step_start(zc.z, noise)
            else:
                assert t is not None
                z_t = self.process.q_sample(z0.z, zc.z, t, noise)
            out = self.process.denoise(self.bind_net(zc), z_t, t, zc.z)
            z0_hat = self.process.x0(z_t, out.float(), t, zc.z)
            if not one_step:
                diffusion = self.process.loss(out, z0.z, zc.z, t, noise)
        if one_step:
            # the one-step diffusion loss written in x0 space: per-sample latent MSE
            diffusion = (z0_hat.float() - z0.z.float()).pow(2).flatten(1).mean(1)
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
        start: tuple[Tensor, int] | None = None,
        detail: float | None = None,
    ) -> Tensor:
        """Super-resolve a batch of upsampled LR images (B, C, H, W) in [0, 1] -> SR in [0, 1].

        Sizes that are not a multiple of the codec's factor are padded and cropped back.
        ``x0_hook(z0_hat, t, zc)`` may project each clean estimate (data consistency).
        ``net``: evaluates the denoiser in its place (e.g. tile by tile, ``nets.exact_tiling``).
        ``start``: ``(z, k)`` starts the chain at the k-th time of the schedule from the latent
        ``z`` (see :func:`diffsr.sampling.samplers.sample`). ``detail``: see :meth:`sample_latent`
        (None: an ordinary ``steps``-step sample).
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
        z0 = self.sample_latent(zc.z, steps, generator=generator, x0_hook=hook, noise=noise, net=net, start=start,
                                detail=detail)
        sr = self.codec.decode(zc.with_z(z0))
        return sr[..., :h, :w].clamp(0, 1)

    def sample_latent(
        self,
        zc: Tensor,
        steps: int | None = None,
        *,
        generator: torch.Generator | None = None,
        x0_hook: X0Hook | None = None,
        noise: Tensor | None = None,
        net: Callable[..., Tensor] | None = None,
        start: tuple[Tensor, int] | None = None,
        detail: float | None = None,
    ) -> Tensor:
        """z0 for the condition latent ``zc``: a ``steps``-step sample, or the ``detail`` knob.

        detail in [0, 1] trades faithfulness for realism, for every process the same way:
        0 is the faithful estimate, the one-step sample (the process's clean estimate from its
        starting point); 1 is one sample of the full chain (the process's default steps, from
        its prior); in between, the faithful estimate is re-noised with the process's own
        q(z_t | z0, zc) to the time a fraction ``detail`` down the full chain's schedule, and the
        chain runs from there (SDEdit-style), so more detail means more of the chain generates.
        ``steps`` is ignored when ``detail`` is given.
        """
        from diffsr.processes.common import randn
        from diffsr.sampling.samplers import sample

        net = self.net if net is None else net
        process = self.process
        if detail is None:
            return sample(net, process, zc, steps, generator=generator, x0_hook=x0_hook, noise=noise, start=start)
        if not 0.0 <= detail <= 1.0:
            raise ValueError(f"detail must be in [0, 1], got {detail}")
        times = process.sample_schedule(None)
        if detail == 1.0:
            return sample(net, process, zc, None, generator=generator, x0_hook=x0_hook, noise=noise)
        faithful = sample(net, process, zc, 1, generator=generator, x0_hook=x0_hook, noise=noise)
        k = min(len(times) - 1, round((1.0 - detail) * len(times)))
        if detail == 0.0:
            return faithful
        t = torch.full((zc.shape[0],), times[k], device=zc.device, dtype=torch.promote_types(zc.dtype, torch.float32))
        eps = randn(zc.shape, device=zc.device, dtype=zc.dtype, generator=generator)
        z_k = process.q_sample(faithful, zc, t, eps)
        return sample(net, process, zc, None, generator=generator, x0_hook=x0_hook, start=(z_k, k))


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
    """Build codec, net and process from a Config (each from its registry)."""
    from diffsr.codecs import CODECS
    from diffsr.nets import NETS
    from diffsr.processes import PROCESSES

    channels = config.data.channels
    codec = CODECS.build_from(config.codec, channels=channels)
    process = PROCESSES.build_from(config.process)
    latent = codec.latent_channels(channels)
    out = latent * getattr(process, "output_multiplier", 1)
    net = NETS.build_from(config.net, in_channels=latent, cond_channels=latent, out_channels=out,
                          channels=channels, scale=config.data.scale)
    if NETS.caps(config.net.name).feed_forward:
        net = BaselineDenoiser(net)
    return SRModel(codec, net, process, channels)


def stack_inputs(outputs: StepOutputs, batch: dict[str, Any], model: SRModel, **override: Any) -> dict[str, Any]:
    """The loss stack's keyword arguments for a training forward's outputs and its batch.

    ``LossStack(**stack_inputs(...), step=..., last_layer=...)`` and ``LossStack.term_losses(**...)``
    (the audit probe) read the same tensors. ``override`` replaces entries (e.g. the teacher's
    output as ``hr`` in distillation).
    """
    inputs = {
        "z0_hat": outputs.z0_hat,
        "t": outputs.t,
        "decode": model.decoder_for(outputs.zc),
        "hr": batch["hr"],
        "z0": outputs.z0.z,
        "mask": batch.get("mask"),
        "paired": batch.get("paired"),
        "diffusion": outputs.diffusion,
    }
    inputs.update(override)
    return inputs


# ----------------------------------------------------------------------------- weight state

_COMPILED = "_orig_mod."  # the attribute torch.compile's wrapper module keeps the original under


def plain_key(key: str) -> str:
    """A state-dict key without torch.compile's wrapper level ('net._orig_mod.x' -> 'net.x')."""
    return key.replace(_COMPILED, "")


def trainable_state(model: SRModel) -> dict[str, Tensor]:
    """The weights a checkpoint stores: the denoiser and any learnable codec parameters.

    A frozen VAE is not copied into every checkpoint: it is reloaded from ``codec.path``. Keys
    are those of the un-compiled model (a ``torch.compile`` wrapper's ``_orig_mod.`` is dropped).
    """
    state = {plain_key(k): v for k, v in model.state_dict().items()}
    keep_codec = model.codec.is_learned
    return {k: v for k, v in state.items() if not k.startswith("codec.") or keep_codec}


def load_trainable_state(model: SRModel, state: dict[str, Tensor]) -> None:
    """Load what ``trainable_state`` saved; anything else must already be in the model.

    Wrong keys, wrong shapes and NaN/Inf weights are :class:`CheckpointError` (one line). Keys
    saved from a compiled net by older versions (``net._orig_mod.*``) load too, into a
    compiled model or not.
    """
    own = model.state_dict()
    alias = {plain_key(k): k for k in own}
    state = {alias.get(plain_key(k), plain_key(k)): v for k, v in state.items()}
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"checkpoint does not match the model: '{k}' has shape {tuple(state[k].shape)}, "
            f"the model expects {tuple(own[k].shape)} ({len(wrong)} mismatched tensor(s))"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint holds NaN/Inf weights in {bad[:3]} ({len(bad)} tensor(s))")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("codec.") or model.codec.is_learned]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match the model: missing {missing[:3]}, unexpected {list(unexpected)[:3]}"
        )
