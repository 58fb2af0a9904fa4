"""Degradations: how a low-resolution image is made from a high-resolution one.

Every function takes a batch ``(B, C, H, W)`` of float images in [0, 1] and returns a batch;
random ones take a ``torch.Generator`` (random numbers are drawn on the CPU and moved to the
input's device, so a seed gives the same result on every device; ``None`` uses torch's global
generator). Per-sample parameters may be floats or tensors of shape (B,).

Clamping: the resizers (:func:`bicubic_down`, :func:`upsample`) clamp to [0, 1] because
bicubic kernels overshoot and images inside diffsr live in [0, 1]; the noise and sensor
functions do not clamp (so their statistics are exact); :class:`Degradation` clamps its output.

Formulas and the property each function is tested for are in docs/data.md.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from diffsr.core.errors import ConfigError
from diffsr.core.registry import Registry
from diffsr.core.schema import Strict
from diffsr.core.shapes import check_image
from diffsr.data.resize import Kernel, bicubic_down, imresize_matlab, imresize_matrix, lr_size, upsample  # noqa: F401

Param = float | Tensor


# ----------------------------------------------------------------------------- helpers


def _per_sample(value: Param, x: Tensor) -> Tensor:
    """A float or (B,) tensor -> (B, 1, 1, 1) on x's device and dtype."""
    t = torch.as_tensor(value, dtype=x.dtype).to(x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"per-sample parameter: expected () or ({x.shape[0]},), got {tuple(t.shape)}")
    return t.view(-1, 1, 1, 1)


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    dtype = like.dtype if like.dtype.is_floating_point else torch.float32
    return torch.randn(shape, generator=generator, dtype=dtype).to(like.device)


def _uniform(bounds: tuple[float, float], n: int, generator: torch.Generator | None) -> Tensor:
    """n draws from U(lo, hi) (float64, CPU)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _lr_size(h: int, w: int, scale: int) -> tuple[int, int]:
    return lr_size(h, w, scale)


# ----------------------------------------------------------------------------- resizing


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


# ----------------------------------------------------------------------------- blur and noise


def gaussian_kernel1d(sigma: Tensor, radius: int) -> Tensor:
    """Normalised 1-D Gaussians (B, 2 radius + 1), one per sigma; sigma 0 gives a delta."""
    x = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    s = sigma.reshape(-1, 1).clamp(min=1e-6)
    k = torch.exp(-0.5 * (x / s) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(
    x: Tensor,
    sigma: Param,
    *,
    radius: int | None = None,
    padding: str = "reflect",
) -> Tensor:
    """Separable Gaussian blur with per-sample ``sigma`` (float or (B,)).

    The kernel has radius ``ceil(3 max sigma)`` (or ``radius``) and sums to one. ``padding``:
    "reflect" (default; falls back to "replicate" for images narrower than the kernel) or
    "circular" (then the image mean is preserved exactly).
    """
    check_image(x, "x")
    b, c, h, w = x.shape
    sig = _per_sample(sigma, x).view(-1).to(torch.float64)
    if radius is None:
        radius = max(1, math.ceil(3.0 * float(sig.max())))
    if padding == "reflect" and radius >= min(h, w):
        padding = "replicate"
    kernel = gaussian_kernel1d(sig, radius).to(x.dtype)  # (B, K)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, K)
    k = 2 * radius + 1
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (radius, radius, radius, radius), mode=padding)
    y = F.conv2d(y, kernel.view(b * c, 1, k, 1), groups=b * c)
    y = F.conv2d(y, kernel.view(b * c, 1, 1, k), groups=b * c)
    return y.view(b, c, h, w)


def add_gaussian_noise(x: Tensor, sigma: Param, generator: torch.Generator | None = None) -> Tensor:
    """``x + sigma n``, n ~ N(0, 1) per pixel and channel; sigma per sample. Not clamped."""
    return x + _per_sample(sigma, x) * _randn(tuple(x.shape), x, generator)


def add_poisson_noise(x: Tensor, peak: Param, generator: torch.Generator | None = None) -> Tensor:
    """Shot noise: ``Poisson(peak x) / peak`` (mean x, variance x / peak). Not clamped.

    ``peak`` is the photon count of a pixel of value 1 (per sample).
    """
    p = _per_sample(peak, x)
    rate = (x.clamp(min=0.0) * p).to(torch.float64).cpu()
    counts = torch.poisson(rate, generator=generator)
    return counts.to(device=x.device, dtype=x.dtype) / p


# ----------------------------------------------------------------------------- MRI k-space


def kspace_keep_slices(h: int, w: int, scale: int) -> tuple[slice, slice]:
    """The frequencies :func:`kspace_truncate` keeps, as (rows, cols) slices of the *centred*
    (``fftshift``-ed) spectrum of an h x w HR image: |k| <= (h // scale - 1) // 2 per axis."""
    ky, kx = (h // scale - 1) // 2, (w // scale - 1) // 2
    return slice(h // 2 - ky, h // 2 + ky + 1), slice(w // 2 - kx, w // 2 + kx + 1)


def _kept(n_hr: int, n_lr: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Frequencies |k| <= (n_lr - 1) // 2 as indices into an n_hr and an n_lr spectrum."""
    k = (n_lr - 1) // 2
    f = torch.arange(-k, k + 1, device=device)
    return f % n_hr, f % n_lr


def kspace_measure(hr: Tensor, scale: int, rician: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """The complex k-space measurement of a k-space truncated acquisition, as an LR image (B, C, h, w).

    ``IFFT2`` of the kept centre of ``FFT2(hr)`` (scaled so intensities are preserved, see
    :func:`kspace_truncate`), plus complex Gaussian noise of std ``rician`` per component. This
    is what the scanner measured: :func:`kspace_truncate` shows its magnitude, and k-space data
    consistency projects onto it (:func:`diffsr.sampling.consistency.kspace_project`). Complex
    dtype (complex64 / complex128 after the input's precision).
    """
    check_image(hr, "hr")
    _, _, hh, ww = hr.shape
    h, w = _lr_size(hh, ww, scale)
    work = hr if hr.dtype in (torch.float32, torch.float64) else hr.float()
    spectrum = torch.fft.fft2(work)
    hr_r, lr_r = _kept(hh, h, hr.device)
    hr_c, lr_c = _kept(ww, w, hr.device)
    out = spectrum.new_zeros((*hr.shape[:2], h, w))
    kept = spectrum.index_select(-2, hr_r).index_select(-1, hr_c) * (h * w / (hh * ww))
    out[..., lr_r[:, None], lr_c[None, :]] = kept
    lr = torch.fft.ifft2(out)
    if rician > 0:
        noise_re = _randn(tuple(lr.shape), work, generator)
        noise_im = _randn(tuple(lr.shape), work, generator)
        lr = lr + rician * torch.complex(noise_re, noise_im)
    return lr


def kspace_truncate(
    hr: Tensor,
    scale: int,
    rician: float = 0.0,
    generator: torch.Generator | None = None,
    *,
    magnitude: bool = True,
) -> Tensor:
    """MRI-style low resolution: keep the centre of k-space, as a smaller image.

    With X = FFT2(hr) (H x W) and h, w = H // scale, W // scale, the LR spectrum (h x w) holds
    X at the frequencies |k_y| <= (h - 1) // 2, |k_x| <= (w - 1) // 2, times (h w) / (H W) so
    that intensities are preserved (a constant stays the same constant); everything else is
    zero (for even h the LR Nyquist row/column too, so a real HR gives a real LR). Then
    ``lr = IFFT2(spectrum)``, complex Gaussian noise of std ``rician`` per component is added
    and the magnitude taken (Rician noise) when ``magnitude`` (default; else the real part).
    :func:`kspace_upsample` (zero-filling) of a noiseless ``magnitude=False`` LR has exactly
    the HR's spectrum at the kept frequencies and zero elsewhere.
    """
    lr = kspace_measure(hr, scale, rician, generator)
    result = lr.abs() if magnitude else lr.real
    return result.to(hr.dtype)


def kspace_upsample(lr: Tensor, scale: int, *, real: bool = True) -> Tensor:
    """Zero-filled (sinc) upsampling: the inverse of :func:`kspace_truncate`'s cropping.

    The LR spectrum at |k| <= (h - 1) // 2 is placed in an (h scale) x (w scale) spectrum,
    times (H W) / (h w); the rest is zero; the real part of the inverse FFT is returned
    (not clamped), or the complex image with ``real=False`` (``lr`` may then be complex, a
    :func:`kspace_measure`).
    """
    check_image(lr, "lr")
    _, _, h, w = lr.shape
    hh, ww = h * scale, w * scale
    work = lr if lr.dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128) else lr.float()
    spectrum = torch.fft.fft2(work)
    hr_r, lr_r = _kept(hh, h, lr.device)
    hr_c, lr_c = _kept(ww, w, lr.device)
    out = spectrum.new_zeros((*lr.shape[:2], hh, ww))
    kept = spectrum.index_select(-2, lr_r).index_select(-1, lr_c) * (hh * ww / (h * w))
    out[..., hr_r[:, None], hr_c[None, :]] = kept
    up = torch.fft.ifft2(out)
    return up.real.to(lr.real.dtype if lr.is_complex() else lr.dtype) if real else up


# ----------------------------------------------------------------------------- infrared sensor


def column_stripes(x: Tensor, sigma: Param, generator: torch.Generator | None = None) -> Tensor:
    """Column fixed-pattern noise: ``x + sigma n_col``, one N(0, 1) offset per column (and channel).

    The added pattern is constant along each column (uncooled microbolometer readout).
    """
    b, c, _, w = x.shape
    offsets = _randn((b, c, 1, w), x, generator)
    return x + _per_sample(sigma, x) * offsets


def gain_nonuniformity(
    x: Tensor,
    amplitude: Param,
    generator: torch.Generator | None = None,
    *,
    grid: int = 3,
) -> Tensor:
    """Low-frequency gain drift: ``x (1 + a g)``, g a smooth field with max |g| = 1.

    g is a ``grid`` x ``grid`` array of N(0, 1) values upsampled bicubically (align_corners=True)
    to the image size, zero-meaned and scaled to max |g| = 1: its energy lies at spatial
    frequencies below about ``grid`` cycles per image.
    """
    b, _, h, w = x.shape
    coarse = _randn((b, 1, grid, grid), x, generator)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    field = field / field.abs().amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
    return x * (1.0 + _per_sample(amplitude, x) * field)


def reduce_contrast(x: Tensor, factor: Param) -> Tensor:
    """``m + f (x - m)`` with m the per-image, per-channel mean: the std is multiplied by f."""
    m = x.mean(dim=(-2, -1), keepdim=True)
    return m + _per_sample(factor, x) * (x - m)


def infrared_degrade(
    hr: Tensor,
    scale: int,
    *,
    blur_sigma: Param = 0.0,
    contrast: Param = 1.0,
    nonuniformity: Param = 0.0,
    stripe_sigma: Param = 0.0,
    noise_sigma: Param = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Thermal-camera LR: optics blur, bicubic decimation, then sensor effects on the LR grid.

    ``lr = stripes(nonuniformity(contrast(bicubic_down(blur(hr)))) + noise`` (not clamped):
    the fixed-pattern effects belong to the sensor, so they act on the LR pixel grid.
    """
    x = gaussian_blur(hr, blur_sigma) if torch.as_tensor(blur_sigma).max() > 0 else hr
    x = bicubic_down(x, scale)
    x = reduce_contrast(x, contrast)
    x = gain_nonuniformity(x, nonuniformity, generator)
    x = column_stripes(x, stripe_sigma, generator)
    return add_gaussian_noise(x, noise_sigma, generator)


# ----------------------------------------------------------------------------- Real-ESRGAN style

_RESIZE_MODES = ("area", "bilinear", "bicubic")


def _pick(n: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def _noise(
    x: Tensor,
    noise_sigma: tuple[float, float],
    poisson: float,
    peak_log10: tuple[float, float],
    generator: torch.Generator | None,
) -> Tensor:
    if float(torch.rand(1, generator=generator)) < poisson:
        peak = float(10 ** _uniform(peak_log10, 1, generator))
        return add_poisson_noise(x, peak, generator)
    return add_gaussian_noise(x, float(_uniform(noise_sigma, 1, generator)), generator)


def realesrgan_degrade(
    hr: Tensor,
    scale: int,
    *,
    blur_sigma: tuple[float, float] = (0.2, 3.0),
    noise_sigma: tuple[float, float] = (0.0, 0.1),
    poisson: float = 0.4,
    peak_log10: tuple[float, float] = (2.0, 3.5),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Second-order degradation (after Real-ESRGAN, without JPEG), per sample.

    Twice: Gaussian blur (sigma ~ U(blur_sigma); second stage U(lo, hi / 2)), a resize with a
    random mode (area / bilinear / bicubic) to a random size (stage 1: H r, r ~ U(1 / scale,
    1); stage 2: (H / scale) r, r ~ U(0.8, 1.2)), and noise (Poisson with probability
    ``poisson``, peak 10^U(peak_log10), else Gaussian sigma ~ U(noise_sigma)). A final
    bicubic resize gives exactly (H // scale, W // scale). JPEG artefacts are not simulated
    (medical and thermal images are rarely JPEG-compressed). Not clamped.
    """
    check_image(hr, "hr")
    h, w = _lr_size(hr.shape[-2], hr.shape[-1], scale)
    out = []
    for i in range(hr.shape[0]):
        x = hr[i : i + 1]
        stages = ((blur_sigma, (1.0 / scale, 1.0), hr.shape[-2:]),
                  ((blur_sigma[0], blur_sigma[1] / 2), (0.8, 1.2), (h, w)))
        for sigma_range, ratio_range, (bh, bw) in stages:
            x = gaussian_blur(x, float(_uniform(sigma_range, 1, generator)))
            ratio = float(_uniform(ratio_range, 1, generator))
            size = (max(2, round(bh * ratio)), max(2, round(bw * ratio)))
            x = _resize(x, size, _RESIZE_MODES[_pick(len(_RESIZE_MODES), generator)])
            x = _noise(x, noise_sigma, poisson, peak_log10, generator)
        out.append(F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False))
    return torch.cat(out)


# ----------------------------------------------------------------------------- Degradation

DEGRADATIONS: Registry[Degradation] = Registry("degradation", capabilities={"one_axis": False})


class Degradation:
    """A configured, randomised HR -> LR map: ``lr = degradation(hr, generator)``.

    hr (B, C, H, W) in [0, 1] -> lr (B, C, H // scale, W // scale) in [0, 1] (clamped).
    Parameters given as (low, high) ranges are drawn per sample from U(low, high) with
    ``generator``. ``upsample`` is the bicubic condition used for training and inference.
    """

    name = "bicubic"

    def __init__(
        self,
        scale: int,
        *,
        blur_sigma: tuple[float, float] = (0.2, 2.0),
        noise_sigma: tuple[float, float] = (0.0, 0.02),
        poisson: float = 0.0,
        rician: float = 0.0,
        stripe_sigma: tuple[float, float] = (0.0, 0.03),
        nonuniformity: tuple[float, float] = (0.0, 0.1),
        contrast: tuple[float, float] = (0.7, 1.0),
    ) -> None:
        if scale < 1:
            raise ConfigError(f"scale must be >= 1, got {scale}")
        ranges = {
            "blur_sigma": blur_sigma,
            "noise_sigma": noise_sigma,
            "stripe_sigma": stripe_sigma,
            "nonuniformity": nonuniformity,
            "contrast": contrast,
        }
        for key, (lo, hi) in ranges.items():
            if lo > hi or lo < 0:
                raise ConfigError(f"degradation.{key}: expected 0 <= low <= high, got ({lo}, {hi})")
        if not 0 <= poisson <= 1:
            raise ConfigError(f"degradation.poisson: a probability in [0, 1], got {poisson}")
        self.scale = scale
        self.blur_sigma, self.noise_sigma, self.stripe_sigma = blur_sigma, noise_sigma, stripe_sigma
        self.nonuniformity, self.contrast = nonuniformity, contrast
        self.poisson, self.rician = poisson, rician

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale})"

    def degrade(self, hr: Tensor, generator: torch.Generator | None) -> Tensor:
        """The unclamped LR; subclasses override."""
        return bicubic_down(hr, self.scale)

    def __call__(self, hr: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_image(hr, "hr")
        return self.degrade(hr, generator).clamp(0.0, 1.0)

    def measure(self, hr: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """(the LR image, the raw measurement data consistency should project onto, or None).

        None means the LR image itself is the measurement (every degradation but k-space, whose
        measurement is complex and unclamped while the image shown is its clamped magnitude).
        """
        return self(hr, generator), None

    def upsample(self, lr: Tensor) -> Tensor:
        """The condition on the HR grid: bicubic, clamped (see :func:`upsample`)."""
        return upsample(lr, self.scale)


# ----------------------------------------------------------------------------- config models
# each degradation takes only the parameters it uses (a key another one uses is an error)

Range = tuple[float, float]


class BicubicConfig(Strict):
    """``lr = bicubic_down(hr)``; ``kernel``: PyTorch's (a = -0.75) or MATLAB imresize's (a = -0.5)."""

    name: Literal["bicubic"] = "bicubic"
    kernel: Kernel = "torch"


class BlurNoiseConfig(Strict):
    """Gaussian blur, bicubic decimation, Gaussian or Poisson noise."""

    name: Literal["blur_noise"] = "blur_noise"
    blur_sigma: Range = (0.2, 2.0)
    noise_sigma: Range = (0.0, 0.02)  # Gaussian, data in [0, 1]
    poisson: float = Field(0.0, ge=0)  # probability of Poisson noise


class KSpaceConfig(Strict):
    """MRI k-space truncation with Rician noise."""

    name: Literal["kspace"] = "kspace"
    rician: float = Field(0.0, ge=0)  # Rician noise sigma


class InfraredConfig(Strict):
    """Thermal camera: optics blur, decimation, contrast loss, gain drift, column stripes, noise."""

    name: Literal["infrared"] = "infrared"
    blur_sigma: Range = (0.2, 2.0)
    noise_sigma: Range = (0.0, 0.02)
    stripe_sigma: Range = (0.0, 0.03)  # column fixed-pattern noise
    nonuniformity: Range = (0.0, 0.1)  # low-frequency gain drift
    contrast: Range = (0.7, 1.0)  # contrast factor


class RealESRGANConfig(Strict):
    """Second-order blur / resize / noise (after Real-ESRGAN, without JPEG)."""

    name: Literal["realesrgan"] = "realesrgan"
    blur_sigma: Range = (0.2, 2.0)
    noise_sigma: Range = (0.0, 0.02)
    poisson: float = Field(0.0, ge=0)


@DEGRADATIONS.register("bicubic", config=BicubicConfig)
class BicubicDegradation(Degradation):
    """``lr = bicubic_down(hr)``: deterministic, the classic SR benchmark setting.

    kernel "matlab": MATLAB ``imresize`` down (and the condition up) instead of PyTorch's kernel.
    """

    name = "bicubic"

    def __init__(self, scale: int, *, kernel: Kernel = "torch", **params: Any) -> None:
        super().__init__(scale, **params)
        if kernel not in ("torch", "matlab"):
            raise ConfigError(f"degradation.kernel: 'torch' or 'matlab', got {kernel!r}")
        self.kernel = kernel

    def degrade(self, hr: Tensor, generator: torch.Generator | None) -> Tensor:
        return bicubic_down(hr, self.scale, kernel=self.kernel)

    def upsample(self, lr: Tensor) -> Tensor:
        return upsample(lr, self.scale, kernel=self.kernel)


@DEGRADATIONS.register("blur_noise", config=BlurNoiseConfig)
class BlurNoiseDegradation(Degradation):
    """``lr = bicubic_down(blur_sigma(hr)) + noise``; Poisson (peak 10^U(2, 3.5)) with probability
    ``poisson``, else Gaussian with sigma ~ U(noise_sigma)."""

    name = "blur_noise"

    def degrade(self, hr: Tensor, generator: torch.Generator | None) -> Tensor:
        b = hr.shape[0]
        sigma = _uniform(self.blur_sigma, b, generator)
        noise = _uniform(self.noise_sigma, b, generator)
        use_poisson = torch.rand(b, generator=generator, dtype=torch.float64) < self.poisson
        peak = 10 ** _uniform((2.0, 3.5), b, generator)
        lr = bicubic_down(gaussian_blur(hr, sigma), self.scale)
        gauss = add_gaussian_noise(lr, noise, generator)
        if not use_poisson.any():
            return gauss
        shot = add_poisson_noise(lr, peak, generator)
        return torch.where(use_poisson.to(hr.device).view(-1, 1, 1, 1), shot, gauss)


@DEGRADATIONS.register("kspace", config=KSpaceConfig)
class KSpaceDegradation(Degradation):
    """``lr = |IFFT(centre of FFT(hr))| `` with Rician noise of std ``rician`` (MRI)."""

    name = "kspace"

    def degrade(self, hr: Tensor, generator: torch.Generator | None) -> Tensor:
        return kspace_truncate(hr, self.scale, rician=self.rician, generator=generator)

    def measure(self, hr: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """(|measurement| clamped to [0, 1], the complex measurement): one draw of the noise for both."""
        check_image(hr, "hr")
        measurement = kspace_measure(hr, self.scale, self.rician, generator)
        return measurement.abs().to(hr.dtype).clamp(0.0, 1.0), measurement


@DEGRADATIONS.register("infrared", config=InfraredConfig)
class InfraredDegradation(Degradation):
    """:func:`infrared_degrade` with every parameter drawn per sample from its range."""

    name = "infrared"

    def degrade(self, hr: Tensor, generator: torch.Generator | None) -> Tensor:
        b = hr.shape[0]
        return infrared_degrade(
            hr,
            self.scale,
            blur_sigma=_uniform(self.blur_sigma, b, generator),
            contrast=_uniform(self.contrast, b, generator),
            nonuniformity=_uniform(self.nonuniformity, b, generator),
            stripe_sigma=_uniform(self.stripe_sigma, b, generator),
            noise_sigma=_uniform(self.noise_sigma, b, generator),
            generator=generator,
        )


@DEGRADATIONS.register("realesrgan", config=RealESRGANConfig)
class RealESRGANDegradation(Degradation):
    """:func:`realesrgan_degrade` with the configured blur / noise ranges and Poisson probability."""

    name = "realesrgan"

    def degrade(self, hr: Tensor, generator: torch.Generator | None) -> Tensor:
        return realesrgan_degrade(
            hr,
            self.scale,
            blur_sigma=self.blur_sigma,
            noise_sigma=self.noise_sigma,
            poisson=self.poisson,
            generator=generator,
        )


def build_degradation(cfg: Any, scale: int) -> Degradation:
    """The :class:`Degradation` a registered degradation config names (None: bicubic) for ``scale``."""
    if cfg is None:
        return BicubicDegradation(scale)
    return DEGRADATIONS.build_from(cfg, scale=scale)
