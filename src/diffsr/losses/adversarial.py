"""PatchGAN adversarial term: discriminator, losses, lazy R1 and the generator-side module.

The discriminator is the pix2pix N-layer PatchGAN (4x4 convolutions, stride 2 for the first
``layers`` convolutions, LeakyReLU 0.2, no sigmoid: it outputs logits per patch). Normalisation
is GroupNorm instead of pix2pix's BatchNorm: per sample, identical in train and eval mode, and
safe under R1's double backward; a generator pass never touches running statistics. The
receptive field is 70 x 70 pixels for ``layers=3`` (34 for 2, 142 for 4).

Losses take logits (B, 1, h, w) and return per-sample values (B,), averaged over patches:

- hinge: D: relu(1 - D(real)) + relu(1 + D(fake)); G: -D(fake)
- non-saturating: D: softplus(-D(real)) + softplus(D(fake)); G: softplus(-D(fake))
- R1: gamma / 2 * ||grad_x D(x)||^2 on real images, D(x) the per-sample mean patch logit; lazy:
  every ``r1_interval`` steps, multiplied by the interval (StyleGAN2).

:class:`GANLoss` owns the discriminator *and its optimizer* (AdamW): the generator-side
``forward`` returns the per-sample generator loss without leaving gradients in D (a functional
call on detached D parameters), and :meth:`GANLoss.discriminator_step` trains D on detached
fakes. Its ``state_dict`` carries the optimizer state and step (``_extra_state``), so a
checkpoint resumes exactly; load it after moving the module to its device.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call

from diffsr.core.errors import ConfigError
from diffsr.core.shapes import check_image, check_mask
from diffsr.losses.base import TERMS, TermBase

__all__ = [
    "GANLoss",
    "NLayerDiscriminator",
    "hinge_d_loss",
    "hinge_g_loss",
    "nonsaturating_d_loss",
    "nonsaturating_g_loss",
    "patch_mean",
    "r1_penalty",
]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class NLayerDiscriminator(nn.Module):
    """pix2pix PatchGAN: (B, in_channels, H, W) -> patch logits (B, 1, h, w).

    width: channels of the first layer (doubled per layer up to 8x). layers: number of stride-2
    convolutions (3: 70 x 70 receptive field). For 64 x 64 inputs and layers=3 the output is 6 x 6.
    """

    def __init__(self, in_channels: int, width: int = 64, layers: int = 3) -> None:
        super().__init__()
        if layers < 1:
            raise ConfigError(f"discriminator layers must be >= 1, got {layers}")
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, width, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            blocks += [
                nn.Conv2d(width * prev, width * mult, kernel_size=4, stride=stride, padding=1, bias=False),
                _group_norm(width * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        blocks.append(nn.Conv2d(width * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*blocks)
        self.in_channels, self.layers = in_channels, layers

    @staticmethod
    def receptive_field(layers: int) -> int:
        """Receptive field (pixels) of one output logit: 1 + 3 * (2^(layers+1) - 1 + 2^layers)."""
        # kernels 4: stride-2 layers contribute 3 * 2^i, the two stride-1 layers 3 * 2^layers each
        return 1 + 3 * (sum(2**i for i in range(layers)) + 2 * 2**layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def patch_mean(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean (B,) of a patch map (B, 1, h, w); ``mask`` (B, 1, H, W) area-resized as weights."""
    if mask is None:
        return logits.mean(dim=(1, 2, 3))
    weight = F.interpolate(mask.to(logits.dtype), size=logits.shape[-2:], mode="area")
    den = weight.sum(dim=(1, 2, 3))
    return (logits * weight).sum(dim=(1, 2, 3)) / den.clamp_min(torch.finfo(den.dtype).tiny)


def _hinge_real(real_logits: Tensor) -> Tensor:
    return F.relu(1 - real_logits)


def _hinge_fake(fake_logits: Tensor) -> Tensor:
    return F.relu(1 + fake_logits)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Per-sample hinge discriminator loss (B,): mean relu(1 - real) + mean relu(1 + fake)."""
    return patch_mean(_hinge_real(real_logits)) + patch_mean(_hinge_fake(fake_logits))


def hinge_g_loss(fake_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample hinge generator loss (B,): -mean D(fake)."""
    return -patch_mean(fake_logits, mask)


def _nonsaturating_real(real_logits: Tensor) -> Tensor:
    return F.softplus(-real_logits)


def _nonsaturating_fake(fake_logits: Tensor) -> Tensor:
    return F.softplus(fake_logits)


def nonsaturating_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Per-sample non-saturating discriminator loss (B,): mean softplus(-real) + mean softplus(fake)."""
    return patch_mean(_nonsaturating_real(real_logits)) + patch_mean(_nonsaturating_fake(fake_logits))


def nonsaturating_g_loss(fake_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample non-saturating generator loss (B,): mean softplus(-D(fake)) = -log sigmoid(D(fake))."""
    return patch_mean(F.softplus(-fake_logits), mask)


def r1_penalty(d_out_real: Tensor, real: Tensor, gamma: float = 10.0) -> Tensor:
    """Per-sample R1 (B,): gamma / 2 * ||d D(real) / d real||^2, differentiable (create_graph).

    D(real) is the per-sample score: the mean of the patch logits ``d_out_real`` (B, ...), as in
    the losses, so the penalty does not grow with the number of patches. ``real`` must require
    grad and ``d_out_real`` be computed from it.
    """
    score = d_out_real.reshape(d_out_real.shape[0], -1).mean(dim=1)
    (grad,) = torch.autograd.grad(score.sum(), real, create_graph=True)
    return 0.5 * gamma * grad.square().flatten(1).sum(dim=1)


#: the discriminator losses' real and fake halves (patch maps), the same functions as in
#: ``hinge_d_loss`` / ``nonsaturating_d_loss``, applied separately when the counts differ
_D_PARTS = {"hinge": (_hinge_real, _hinge_fake), "nonsaturating": (_nonsaturating_real, _nonsaturating_fake)}
_G_LOSSES = {"hinge": hinge_g_loss, "nonsaturating": nonsaturating_g_loss}


def _distributed() -> bool:
    """True in a multi-process run (torch.distributed initialised with more than one process)."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GANLoss(nn.Module):
    """Generator-side PatchGAN term (B,) that also trains its own discriminator.

    forward(pred, target, mask=None): the generator loss of ``pred`` (``target`` is unused: the
    real images enter through :meth:`discriminator_step`); zero, but still connected to ``pred``,
    while step < warmup (call :meth:`set_step` each step). D parameters get no gradient from it.
    """

    def __init__(
        self,
        channels: int,
        loss: Literal["hinge", "nonsaturating"] = "hinge",
        layers: int = 3,
        width: int = 64,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        r1_gamma: float = 10.0,
        r1_interval: int = 16,
        warmup: int = 0,
    ) -> None:
        super().__init__()
        if loss not in _D_PARTS:
            raise ConfigError(f"gan loss must be 'hinge' or 'nonsaturating', got {loss!r}")
        if r1_interval < 1:
            raise ConfigError(f"gan r1_interval must be >= 1, got {r1_interval}")
        self.loss, self.r1_gamma, self.r1_interval, self.warmup = loss, r1_gamma, r1_interval, warmup
        self.discriminator = NLayerDiscriminator(channels, width=width, layers=layers)
        self.optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=lr, betas=betas)
        self.step = 0
        self.skipped_steps = 0  # discriminator steps skipped for a NaN/Inf loss or gradient
        self.last_rows = 0  # rows the last discriminator step learnt from (0: none, or skipped)

    def set_step(self, step: int) -> None:
        """The current training step (drives the warm-up)."""
        self.step = int(step)

    @property
    def active(self) -> bool:
        """True once the generator term acts (step >= warmup)."""
        return self.step >= self.warmup

    def forward(self, pred: Tensor, target: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        check_image(pred, "pred")
        check_mask(mask, pred)
        if not self.active:
            # zero but connected to pred (a term that is off still shows in the graph and audit)
            return pred.sum(dim=(1, 2, 3)).mul(0.0).nan_to_num(0.0, posinf=0.0, neginf=0.0)
        # D's parameters enter as detached tensors: gradients reach pred only, never D
        params = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, params, (pred,))
        return _G_LOSSES[self.loss](logits, mask)

    def discriminator_step(
        self, real: Tensor, fake: Tensor, step: int | None = None, mask: Tensor | None = None
    ) -> dict[str, float]:
        """One AdamW step of D on ``real`` vs detached ``fake``; lazy R1 every ``r1_interval`` steps.

        Returns {"d_loss", "d_real", "d_fake", "r1"} (mean logits; r1 is 0.0 on steps without it;
        all 0.0 without rows). ``real`` and ``fake`` may hold different numbers of rows (unpaired rows give
        fakes but no reals). ``mask`` is accepted for symmetry; padding is part of both images.

        With no rows (``real`` or ``fake`` empty) D does not learn; a step whose loss or gradient
        norm is NaN/Inf is skipped and counted in ``skipped_steps``. In a multi-process run the
        optimiser still steps in both cases, with zero gradients and ``last_rows`` 0, so that every
        process takes part in the gradient all-reduce the trainer hooks onto it (see
        ``Trainer._sync_term_optimizers``, which then averages over the rows of all processes).
        """
        del mask
        if step is not None:
            self.set_step(step)
        self.discriminator.train()
        real = real.detach()
        fake = fake.detach()
        self.last_rows = 0
        if real.shape[0] == 0 or fake.shape[0] == 0:
            self._idle_step()
            return {"d_loss": 0.0, "d_real": 0.0, "d_fake": 0.0, "r1": 0.0}
        real_part, fake_part = _D_PARTS[self.loss]
        with torch.enable_grad():
            do_r1 = self.r1_gamma > 0 and self.step % self.r1_interval == 0
            if do_r1:
                real.requires_grad_(True)
            real_logits = self.discriminator(real)
            fake_logits = self.discriminator(fake)
            # mean over the real rows + mean over the fake rows (their counts may differ)
            d_loss = patch_mean(real_part(real_logits)).mean() + patch_mean(fake_part(fake_logits)).mean()
            total = d_loss
            r1 = torch.zeros((), device=real.device)
            if do_r1:
                r1 = r1_penalty(real_logits, real, self.r1_gamma).mean()
                total = total + self.r1_interval * r1
            self.optimizer.zero_grad(set_to_none=True)
            ok = bool(torch.isfinite(total.detach()))
            if ok:
                total.backward()
                grads = [p.grad for p in self.discriminator.parameters() if p.grad is not None]
                ok = not grads or bool(torch.isfinite(torch.stack([g.norm() for g in grads]).norm()))
            if ok:
                self.last_rows = int(fake.shape[0])
                self.optimizer.step()
            else:
                # NaN/Inf loss or gradient: keep D as it is (its weights and Adam moments)
                self.skipped_steps += 1
                self._idle_step()
        return {
            "d_loss": float(d_loss.detach()),
            "d_real": float(real_logits.detach().mean()),
            "d_fake": float(fake_logits.detach().mean()),
            "r1": float(r1.detach()),
        }

    def _idle_step(self) -> None:
        """No update here; in a multi-process run still step (zero gradients, ``last_rows`` 0) for the collective."""
        self.optimizer.zero_grad(set_to_none=True)
        if _distributed():
            for p in self.discriminator.parameters():
                p.grad = torch.zeros_like(p)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def repair_nonfinite(self) -> bool:
        """Re-initialise D and its optimiser state if either holds NaN/Inf (e.g. from a checkpoint).

        Returns True when it repaired something. The new weights derive from a fixed seed, so
        every process of a multi-process run gets the same ones.
        """
        tensors = list(self.discriminator.parameters())
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor) and v.is_floating_point()]
        if all(bool(torch.isfinite(t).all()) for t in tensors):
            return False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for module in self.discriminator.modules():
                reset = getattr(module, "reset_parameters", None)
                if module is not self.discriminator and callable(reset):
                    reset()
        self.optimizer.state.clear()
        return True

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "step": self.step, "skipped": self.skipped_steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped", 0))

    def extra_repr(self) -> str:
        return (
            f"loss={self.loss!r}, r1_gamma={self.r1_gamma}, r1_interval={self.r1_interval}, "
            f"warmup={self.warmup}"
        )

class GANTerm(TermBase):
    """PatchGAN adversarial term for the generator; the discriminator trains alongside."""

    name: Literal["gan"]
    loss: Literal["hinge", "nonsaturating"] = "hinge"
    layers: int = Field(3, ge=1, le=5)
    width: int = Field(64, ge=8)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.9)
    r1_gamma: float = Field(10.0, ge=0)
    r1_interval: int = Field(16, ge=1)
    warmup: int = Field(0, ge=0)  # discriminator-only steps before the generator term acts


@TERMS.register("gan", config=GANTerm, space="pixel")
def _build_gan(cfg: GANTerm, *, channels: int, **_: Any) -> nn.Module:
    return GANLoss(
        channels=channels, loss=cfg.loss, layers=cfg.layers, width=cfg.width, lr=cfg.lr,
        betas=tuple(cfg.betas), r1_gamma=cfg.r1_gamma, r1_interval=cfg.r1_interval, warmup=cfg.warmup,
    )
