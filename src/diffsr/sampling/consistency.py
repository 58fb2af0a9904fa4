"""Data consistency at sampling: keep every clean estimate consistent with the LR measurement.

The LR input ``lr`` was made from the unknown HR image ``x`` by a known linear operator A
(``lr = A x``). After each x0 estimate the sampler calls a hook that decodes the estimate,
moves it onto (or towards) the set ``{x : A x = lr}`` and re-encodes it:

- ``backprojection`` (bicubic / blur degradations): A = :func:`~diffsr.data.degrade.bicubic_down`
  (antialiased, unclamped). The estimate is replaced by its orthogonal projection
  ``x + A^T (A A^T)^{-1} (lr - A x)``: the limit of Irani & Peleg's iterative back-projection
  with the adjoint as back-projection kernel, computed in closed form (A is separable, so
  ``A A^T`` is a Kronecker product of two small, well-conditioned matrices, condition number
  about 2; the solve is done in float64). After it ``bicubic_down(x) == lr`` to rounding error.
- ``kspace`` (MRI k-space truncation, :func:`~diffsr.data.degrade.kspace_truncate`): the
  measured low frequencies replace the estimate's. Exact: the output's kept frequencies equal
  the measurement's (``kspace_upsample(lr)``'s), the others are the estimate's.
- ``guidance > 0`` (with ``consistency: none``): a DPS-style gradient step on the data term,
  ``x <- x - g A^T (A x - lr) / ||A||^2`` (g = 1 is the largest step that never overshoots;
  the step is taken on x0_hat, without back-propagating through the denoiser). The operator is
  the k-space one for ``degradation: kspace``, else bicubic. After an orthogonal projection a
  gradient step changes nothing (its direction lies in the range of A^T, which the projection
  resets), so guidance is ignored when a projection is on.

``consistency_iters`` > 1 alternates the projection with clipping to the image range [0, 1]
(POCS, ending with the projection): both sets contain the true image, so each round moves the
estimate no further from it.

Codecs: the hook decodes, projects the valid (unpadded) region and re-encodes. For a codec
whose decode is linear and lossless (pixel; wavelet ``all``) this is exactly the projection in
latent space. For a VAE the re-encoding is lossy and for the wavelet ``ll`` / ``full`` layouts
the high bands come from the condition's side information, so there the projection is
approximate (the measured numbers are in docs/beyond.md). The model's final output is clipped
to [0, 1] by :meth:`~diffsr.model.SRModel.sample`; the last x0 estimate is exactly
consistent, the clipped image is within the clipping of it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from diffsr.codecs.base import Latent

log = logging.getLogger(__name__)

Mode = Literal["none", "backprojection", "kspace"]
MODES: tuple[str, ...] = ("none", "backprojection", "kspace")

__all__ = [
    "MODES",
    "Consistency",
    "back_project",
    "bicubic_matrix",
    "consistency_active",
    "dps_step",
    "kspace_mask",
    "kspace_project",
    "make_x0_hook",
]


# ----------------------------------------------------------------------------- bicubic operator


@functools.lru_cache(maxsize=32)
def _bicubic_matrix64(n: int, scale: int) -> Tensor:
    # F.interpolate's antialiased bicubic is separable; a width-1 image takes a different code
    # path in PyTorch, so the 1-D kernel is read off a width-2 image of identity columns
    eye = torch.eye(n, dtype=torch.float64).view(n, 1, n, 1).expand(n, 1, n, 2).contiguous()
    out = F.interpolate(eye, size=(n // scale, 2), mode="bicubic", antialias=True, align_corners=False)
    return out[..., 0].reshape(n, n // scale).T.contiguous()


def bicubic_matrix(n: int, scale: int, *, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> Tensor:
    """The 1-D antialiased bicubic downsampling matrix (n // scale, n) of :func:`bicubic_down`.

    ``bicubic_down(x, scale, clamp=False) == A_h @ x @ A_w.T`` for x (..., H, W).
    """
    if n < scale:
        raise ValueError(f"bicubic_matrix: size {n} is smaller than scale {scale}")
    return _bicubic_matrix64(int(n), int(scale)).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def _gram_inverse64(n: int, scale: int) -> Tensor:
    a = _bicubic_matrix64(n, scale)
    return torch.linalg.inv(a @ a.T)


def back_project(x: Tensor, lr: Tensor, scale: int) -> Tensor:
    """The orthogonal projection of x (B, C, H, W) onto ``{x : bicubic_down(x, scale) == lr}``.

    ``x + A^T (A A^T)^{-1} (lr - A x)`` with the separable bicubic operator A, in float64; the
    result has x's dtype. lr: (B, C, H // scale, W // scale).
    """
    _check_pair(x, lr, scale)
    h, w = x.shape[-2:]
    dev = x.device
    a_h, a_w = bicubic_matrix(h, scale, device=dev), bicubic_matrix(w, scale, device=dev)
    g_h, g_w = _gram_inverse64(h, scale).to(dev), _gram_inverse64(w, scale).to(dev)
    x64 = x.double()
    residual = lr.double() - a_h @ x64 @ a_w.T
    u = g_h @ residual @ g_w  # (A A^T)^{-1} r for A = A_h (x) A_w (both Gram inverses symmetric)
    return (x64 + a_h.T @ u @ a_w).to(x.dtype)


def _bicubic_norm2(h: int, w: int, scale: int) -> float:
    """||A||^2 = largest eigenvalue of A A^T = product of the 1-D ones."""
    lam = [float(torch.linalg.eigvalsh(_bicubic_matrix64(n, scale) @ _bicubic_matrix64(n, scale).T).max())
           for n in (h, w)]
    return lam[0] * lam[1]


# ----------------------------------------------------------------------------- k-space operator


def kspace_mask(size: tuple[int, int] | torch.Size, scale: int, device: torch.device | None = None) -> Tensor:
    """Boolean (H, W) mask of the centred (fftshift-ed) spectrum's kept (measured) frequencies."""
    from diffsr.data.degrade import kspace_keep_slices

    h, w = size
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    rows, cols = kspace_keep_slices(h, w, scale)
    mask[rows, cols] = True
    return mask


def kspace_project(x: Tensor, lr: Tensor, scale: int) -> Tensor:
    """Replace the kept (centre) frequencies of x's spectrum by the measurement's, in float64.

    ``lr``: the measurement. Best the complex one the scanner made
    (:func:`~diffsr.data.degrade.kspace_measure`, kept with a simulated LR): then projecting the
    true HR onto its own measurement returns the HR exactly. A real image works too (the
    magnitude LR of a file, all there is for real data); its magnitude and clamping make it
    differ from the true measurement, which caps what the projection can reach. The measurement
    on the HR grid is its zero-filled upsampling; the result's kept frequencies equal it
    exactly, the others are x's, and the real part of the image is returned.
    """
    from diffsr.data.degrade import kspace_upsample

    _check_pair(x, lr, scale)
    work = lr.to(torch.complex128) if lr.is_complex() else lr.double()
    measured = torch.fft.fft2(kspace_upsample(work, scale, real=False), norm="ortho")
    spec = torch.fft.fft2(x.double(), norm="ortho")
    keep = torch.fft.ifftshift(kspace_mask(x.shape[-2:], scale, x.device))
    spec = torch.where(keep, measured, spec)
    # for a real (or noiseless) measurement both spectra are Hermitian and the kept set is
    # symmetric, so the inverse is real; noise in a complex measurement leaves an imaginary part
    return torch.fft.ifft2(spec, norm="ortho").real.to(x.dtype)


# ----------------------------------------------------------------------------- guidance


def dps_step(x: Tensor, lr: Tensor, scale: int, step_size: float, operator: str = "bicubic") -> Tensor:
    """One gradient step on ``||A x - lr||^2 / 2``: ``x - step_size A^T (A x - lr) / ||A||^2``.

    operator: "bicubic" (A = bicubic_down, unclamped) or "kspace" (A = kspace_truncate of the
    complex image, real part; ``||A||^2 = 1 / scale^2``). step_size 1 is the largest step that
    never overshoots; for "kspace" it is the exact projection. Computed with autograd (A^T is the
    vector-Jacobian product), in float64.
    """
    from diffsr.data.degrade import bicubic_down, kspace_measure, kspace_truncate

    _check_pair(x, lr, scale)
    h, w = x.shape[-2:]
    if operator == "bicubic":
        def forward(v: Tensor) -> Tensor:
            return bicubic_down(v, scale, clamp=False)

        norm2 = _bicubic_norm2(h, w, scale)
    elif operator == "kspace" and lr.is_complex():
        def forward(v: Tensor) -> Tensor:
            return torch.view_as_real(kspace_measure(v, scale))

        lr = torch.view_as_real(lr.to(torch.complex128))
        norm2 = (h // scale) * (w // scale) / (h * w)
    elif operator == "kspace":
        def forward(v: Tensor) -> Tensor:
            return kspace_truncate(v, scale, magnitude=False)

        norm2 = (h // scale) * (w // scale) / (h * w)
    else:
        raise ValueError(f"dps_step: operator must be 'bicubic' or 'kspace', got {operator!r}")
    with torch.enable_grad():
        xg = x.detach().double().requires_grad_(True)
        err = 0.5 * (forward(xg) - lr.double()).pow(2).sum()
        (grad,) = torch.autograd.grad(err, xg)
    return (x.double() - (step_size / norm2) * grad).to(x.dtype)


# ----------------------------------------------------------------------------- the projection


def _check_pair(x: Tensor, lr: Tensor, scale: int) -> None:
    if x.ndim != 4 or lr.ndim != 4:
        raise ValueError(f"consistency: expected (B, C, H, W) images, got {tuple(x.shape)} and {tuple(lr.shape)}")
    want = (x.shape[0], x.shape[1], x.shape[-2] // scale, x.shape[-1] // scale)
    if tuple(lr.shape) != want or x.shape[-2] % scale or x.shape[-1] % scale:
        raise ValueError(
            f"consistency: lr {tuple(lr.shape)} is not the x{scale} measurement of x {tuple(x.shape)} "
            f"(expected {want})"
        )


def consistency_active(sample_cfg: Any) -> bool:
    """True when ``sample_cfg`` asks for a projection or a guidance step."""
    return sample_cfg.consistency != "none" or float(sample_cfg.guidance) > 0


class Consistency:
    """Image-space data consistency for one LR measurement: ``x (B, C, H, W) -> x``.

    lr: (B, C, H / scale, W / scale), the measurement: the LR image in [0, 1], or the complex
    k-space measurement for mode "kspace" (see :func:`kspace_project`). mode: "none" |
    "backprojection" | "kspace".
    iters: projection rounds (> 1 alternates with clipping to [0, 1], ending with the
    projection). guidance: the gradient step size (used only with mode "none").
    degradation: the training degradation's name; it picks the guidance operator.
    """

    def __init__(
        self,
        lr: Tensor,
        scale: int,
        mode: str = "backprojection",
        *,
        iters: int = 1,
        guidance: float = 0.0,
        degradation: str = "bicubic",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"consistency mode must be one of {MODES}, got {mode!r}")
        if lr.is_complex() and mode == "backprojection":
            lr = lr.abs().clamp(0.0, 1.0)  # back-projection works on the image
        if iters < 1:
            raise ValueError(f"consistency iters must be >= 1, got {iters}")
        self.lr, self.scale, self.mode = lr, int(scale), mode
        self.iters, self.guidance = int(iters), float(guidance)
        self.operator = "kspace" if mode == "kspace" or degradation == "kspace" else "bicubic"
        if mode == "kspace" and degradation != "kspace":
            log.warning("k-space consistency for a model trained with the '%s' degradation", degradation)
        if mode == "backprojection" and degradation == "kspace":
            log.warning("bicubic back-projection for a model trained with k-space truncation")
        if mode != "none" and self.guidance > 0:
            log.warning("guidance is ignored with consistency '%s' (the projection supersedes it)", mode)

    def project(self, x: Tensor) -> Tensor:
        """One projection onto ``{x : A x = lr}``."""
        lr = self.lr.to(x.device)
        if self.mode == "kspace":
            return kspace_project(x, lr, self.scale)
        return back_project(x, lr, self.scale)

    def __call__(self, x: Tensor) -> Tensor:
        if self.mode == "none":
            if self.guidance > 0:
                return dps_step(x, self.lr.to(x.device), self.scale, self.guidance, self.operator)
            return x
        x = self.project(x)
        for _ in range(self.iters - 1):
            x = self.project(x.clamp(0.0, 1.0))
        return x


def make_x0_hook(model: Any, lr: Tensor, scale: int, sample_cfg: Any, degradation: str,
                 measurement: Tensor | None = None) -> Callable[[Tensor, Tensor, Latent], Tensor]:
    """A sampler hook ``(z0_hat, t, zc) -> z0_hat`` for :meth:`SRModel.sample`.

    Decodes the estimate with the condition's side information, applies :class:`Consistency`
    (from ``sample_cfg.consistency``, ``consistency_iters`` and ``guidance``) to the region
    the LR covers (the sampler may pad to the codec's multiple) and re-encodes.
    lr: (B, C, h, w), the image the condition ``upsample(lr, scale)`` was made from;
    measurement: the raw measurement behind it when it differs (complex k-space), else None.
    """
    fix = Consistency(lr if measurement is None else measurement, scale, sample_cfg.consistency,
                      iters=sample_cfg.consistency_iters,
                      guidance=sample_cfg.guidance, degradation=degradation)
    codec = model.codec
    hv, wv = lr.shape[-2] * scale, lr.shape[-1] * scale

    def hook(z0_hat: Tensor, t: Tensor, zc: Latent) -> Tensor:
        x = codec.decode(zc.with_z(z0_hat))
        if x.shape[-2] < hv or x.shape[-1] < wv:
            raise ValueError(f"consistency: decoded {tuple(x.shape)} is smaller than the LR's x{scale} grid")
        x = x.clone()
        x[..., :hv, :wv] = fix(x[..., :hv, :wv])
        return codec.encode(x).z

    return hook
