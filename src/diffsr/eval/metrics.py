"""Image-quality metrics with pinned conventions: PSNR, SSIM, LPIPS, MS-SSIM, NRMSE/NMSE, HFEN, sharpness.

Every number diffsr reports is computed under a :class:`Conventions` record (data range,
border crop, Y channel or single channel, optional quantisation, LPIPS backbone) that is
written next to the numbers. The conventions follow the super-resolution literature
(BasicSR / MATLAB): PSNR and SSIM on the BT.601 luma of RGB images, ``scale`` pixels cropped
from each border, per-image values averaged over the test set. Unlike BasicSR's validation
path the images stay float (no uint8 round trip) unless ``quantize_bits`` asks for one.

All metrics return one value per image, shape ``(B,)``, in float64.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from diffsr.core.color import Y_OFFSET, Y_WEIGHTS  # BT.601 studio-swing luma (rgb_to_y)
from diffsr.core.errors import ConfigError
from diffsr.core.shapes import check_image

if TYPE_CHECKING:
    from diffsr.config import EvalConfig

log = logging.getLogger(__name__)

#: how to read each metric (written into metrics.json and the report)
METRIC_INFO: dict[str, dict[str, str]] = {
    "psnr": {"better": "higher", "unit": "dB"},
    "ssim": {"better": "higher", "unit": ""},
    "ms_ssim": {"better": "higher", "unit": ""},
    "lpips": {"better": "lower", "unit": ""},
    "nmse": {"better": "lower", "unit": ""},
    "nrmse": {"better": "lower", "unit": ""},
    "hfen": {"better": "lower", "unit": ""},
    "sharpness": {"better": "closer to 1", "unit": "ratio"},
}


@dataclass(frozen=True)
class Conventions:
    """How metrics are computed; printed in every report.

    data_range: max - min of the images (1.0 for diffsr's [0, 1] images).
    crop_border: pixels removed from each side before PSNR/SSIM/LPIPS/sharpness (= scale by
        convention).
    y_channel: RGB images are compared on BT.601 luma (MATLAB / BasicSR formula); images
        with one channel always use that channel; other channel counts use all channels.
    quantize_bits: None evaluates the float output; 8 rounds SR and HR to 8-bit levels
        first (``round(x * 255) / 255``), as saving to PNG would.
    clamp: clip SR to [0, data_range] before anything else (as writing an image would).
    lpips_net: LPIPS backbone (alex | vgg); inputs mapped to [-1, 1], gray -> 3 channels.
    sharpness_cutoff: the band of :func:`sharpness_ratio`, as a fraction of the HR Nyquist
        frequency (0.5 / scale: half the LR Nyquist frequency).
    precision: dtype the metrics are computed in.
    rgb_input: how RGB files were turned into the evaluated images, when they were (e.g. the
        BT.601 studio-swing Y of 1-channel evaluation); None when no conversion was made.
    bicubic: the bicubic kernel of the LR images and the bicubic baseline: "torch" (PyTorch,
        a = -0.75) or "matlab" (MATLAB imresize, a = -0.5, antialiased, mirrored borders: the
        convention of most published tables).
    """

    data_range: float = 1.0
    crop_border: int = 0
    y_channel: bool = True
    quantize_bits: int | None = None
    clamp: bool = True
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    lpips_backbone_weights: str | None = None
    sharpness_cutoff: float = 0.125
    precision: str = "float64"
    rgb_input: str | None = None
    bicubic: str = "torch"

    def __post_init__(self) -> None:
        if self.data_range <= 0:
            raise ConfigError(f"eval.data_range: must be > 0, got {self.data_range}")
        if self.crop_border < 0:
            raise ConfigError(f"eval.crop_border: must be >= 0, got {self.crop_border}")
        if self.quantize_bits is not None and not 1 <= self.quantize_bits <= 16:
            raise ConfigError(f"eval.quantize: bits must be in 1..16, got {self.quantize_bits}")
        if self.bicubic not in ("torch", "matlab"):
            raise ConfigError(f"bicubic: 'torch' or 'matlab', got {self.bicubic!r}")
        if not 0 < self.sharpness_cutoff < 2**0.5:
            raise ConfigError(f"eval.sharpness_cutoff: must be in (0, 1.414), got {self.sharpness_cutoff}")

    @classmethod
    def from_config(cls, cfg: EvalConfig, scale: int, *, bits: int = 8) -> Conventions:
        """Conventions from an ``EvalConfig`` for SR by ``scale``.

        ``crop_border=None`` becomes ``scale``; ``quantize=True`` rounds to ``bits`` bits.
        """
        if scale < 1:
            raise ConfigError(f"scale: must be >= 1, got {scale}")
        return cls(
            data_range=float(cfg.data_range),
            crop_border=scale if cfg.crop_border is None else int(cfg.crop_border),
            y_channel=bool(cfg.y_channel),
            quantize_bits=bits if cfg.quantize else None,
            lpips_net=cfg.lpips_net,
            lpips_weights=cfg.lpips_weights,
            sharpness_cutoff=0.5 / scale,
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields plus the formulas behind them, for metrics.json and the report."""
        out = asdict(self)
        out["y_formula"] = "Y = (65.481 R + 128.553 G + 24.966 B + 16) / 255, RGB in [0, 1] (BT.601)"
        out["ssim"] = "Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, mean over the valid interior"
        out["lpips_input"] = "[-1, 1], RGB (gray replicated to 3 channels), no Y conversion"
        out["sharpness"] = (
            "sum |FFT(hann * (x - mean))|^2 at radial frequency > sharpness_cutoff * Nyquist, "
            "SR over HR (1.0 = as sharp as HR)"
        )
        out["nmse"] = "||SR - HR||^2 / ||HR||^2 per image (fastMRI's NMSE); nrmse = sqrt(nmse)"
        out["hfen"] = ("||LoG(SR) - LoG(HR)|| / ||LoG(HR)|| per image (Ravishankar & Bresler 2011): MATLAB "
                       "fspecial('log', 15, 1.5), imfilter 'symmetric' borders")
        out["bicubic_kernel"] = {
            "torch": "PyTorch bicubic, a = -0.75 (antialiased when shrinking); MATLAB's a = -0.5 gives published "
                     "tables' bicubic numbers",
            "matlab": "MATLAB imresize bicubic, a = -0.5, antialiased when shrinking, mirrored ('symmetric') borders",
        }[self.bicubic]
        out["aggregation"] = "per-image metric, then mean over images"
        return out


# ----------------------------------------------------------------------------- preparation


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 luma of RGB in [0, 1]: (B, 3, H, W) -> (B, 1, H, W) in [16/255, 235/255].

    Same as MATLAB ``rgb2ycbcr`` and BasicSR ``rgb2ycbcr(img, y_only=True)`` on float input.
    """
    check_image(x, "x")
    if x.shape[1] != 3:
        raise ValueError(f"x: expected (B, 3, H, W) RGB, got {tuple(x.shape)}")
    w = torch.tensor(Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x * w).sum(dim=1, keepdim=True) + Y_OFFSET) / 255.0


def crop_border(x: Tensor, border: int) -> Tensor:
    """Remove ``border`` pixels from each side of (B, C, H, W)."""
    if border == 0:
        return x
    h, w = x.shape[-2:]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"crop_border {border}: image {h}x{w} too small to crop")
    return x[..., border : h - border, border : w - border]


def quantize(x: Tensor, bits: int, *, data_range: float = 1.0) -> Tensor:
    """Round to ``bits``-bit levels: ``round(x / r * (2^bits - 1)) / (2^bits - 1) * r``."""
    levels = float(2**bits - 1)
    return torch.round(x / data_range * levels) / levels * data_range


def prepare(sr: Tensor, hr: Tensor, conv: Conventions, *, luma: bool = True) -> tuple[Tensor, Tensor]:
    """Apply the conventions: clamp SR, quantise, crop the border, RGB -> Y.

    Returns (sr, hr) in ``conv.precision``. ``luma=False`` skips the Y conversion (LPIPS).
    """
    check_image(sr, "sr")
    check_image(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr: expected the shape of hr {tuple(hr.shape)}, got {tuple(sr.shape)}")
    dtype = getattr(torch, conv.precision)
    sr, hr = sr.to(dtype), hr.to(dtype)
    if conv.clamp:
        sr = sr.clamp(0.0, conv.data_range)
    if conv.quantize_bits is not None:
        sr = quantize(sr.clamp(0.0, conv.data_range), conv.quantize_bits, data_range=conv.data_range)
        hr = quantize(hr.clamp(0.0, conv.data_range), conv.quantize_bits, data_range=conv.data_range)
    sr, hr = crop_border(sr, conv.crop_border), crop_border(hr, conv.crop_border)
    if luma and conv.y_channel and sr.shape[1] == 3:
        r = conv.data_range
        sr, hr = rgb_to_y(sr / r) * r, rgb_to_y(hr / r) * r
    return sr, hr


# ----------------------------------------------------------------------------- metrics


def psnr(sr: Tensor, hr: Tensor, *, data_range: float) -> Tensor:
    """Per-image PSNR in dB, (B,) float64: ``10 log10(data_range^2 / MSE)``, MSE over C, H, W.

    Identical images give +inf (as skimage).
    """
    check_image(sr, "sr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr: expected the shape of hr {tuple(hr.shape)}, got {tuple(sr.shape)}")
    mse = (sr.double() - hr.double()).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim_metric(sr: Tensor, hr: Tensor, *, data_range: float) -> Tensor:
    """Per-image SSIM, (B,) float64: Gaussian window 11, sigma 1.5 (skimage ``gaussian_weights``)."""
    from diffsr.losses.ssim import ssim

    return ssim(sr.double(), hr.double(), data_range=data_range, reduction="none").double()


MS_SSIM_MIN_SIZE = 161  # 5 scales with window 11: 16 (11 - 1) + 1


def ms_ssim_metric(sr: Tensor, hr: Tensor, *, data_range: float) -> Tensor:
    """Per-image MS-SSIM, (B,) float64: 5 scales, weights of Wang et al. 2003, as pytorch_msssim."""
    from diffsr.losses.ssim import ms_ssim

    return ms_ssim(sr.double(), hr.double(), data_range=data_range, reduction="none").double()


def nmse(sr: Tensor, hr: Tensor) -> Tensor:
    """Per-image normalised MSE, (B,) float64: ``||sr - hr||^2 / ||hr||^2`` (fastMRI's definition).

    Scale-free (no data range): for MRI in arbitrary units. An all-zero HR gives inf (0 / 0: nan).
    """
    check_image(sr, "sr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr: expected the shape of hr {tuple(hr.shape)}, got {tuple(sr.shape)}")
    sr, hr = sr.double(), hr.double()
    return (sr - hr).pow(2).sum(dim=(1, 2, 3)) / hr.pow(2).sum(dim=(1, 2, 3))


def nrmse(sr: Tensor, hr: Tensor) -> Tensor:
    """Per-image normalised RMSE, (B,) float64: ``||sr - hr|| / ||hr||`` = sqrt(NMSE)."""
    return nmse(sr, hr).sqrt()


def log_kernel(size: int = 15, sigma: float = 1.5) -> Tensor:
    """MATLAB ``fspecial('log', size, sigma)``: the zero-sum Laplacian-of-Gaussian kernel, float64."""
    r = (size - 1) / 2
    ax = torch.arange(-r, r + 1, dtype=torch.float64)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    rr = x * x + y * y
    std2 = sigma * sigma
    h = torch.exp(-rr / (2 * std2))
    h = torch.where(h < torch.finfo(torch.float64).eps * h.max(), torch.zeros_like(h), h)
    h = h / h.sum()
    h1 = h * (rr - 2 * std2) / (std2 * std2)
    return h1 - h1.sum() / (size * size)


def _symmetric_pad(x: Tensor, p: int) -> Tensor:
    """MATLAB 'symmetric' (edge-repeating) padding of the last two dims by ``p``."""
    h, w = x.shape[-2:]
    if p > min(h, w):
        raise ValueError(f"HFEN: image {h}x{w} is smaller than the filter's half-width {p}")
    x = torch.cat([x[..., :p, :].flip(-2), x, x[..., h - p :, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :p].flip(-1), x, x[..., w - p :].flip(-1)], dim=-1)


def log_filter(x: Tensor, size: int = 15, sigma: float = 1.5) -> Tensor:
    """``imfilter(x, fspecial('log', size, sigma), 'symmetric')`` per channel, float64 (B, C, H, W)."""
    check_image(x, "x")
    k = log_kernel(size, sigma).to(x.device)[None, None]
    b, c, h, w = x.shape
    flat = _symmetric_pad(x.double().reshape(b * c, 1, h, w), size // 2)
    if x.device.type != "cpu" or w % 8:
        return torch.nn.functional.conv2d(flat, k).reshape(b, c, h, w)
    # on CPU a float64 convolution is an im2col (size^2 x H x W: 590 MB for 640 x 512) and a
    # matrix-vector product; over bands of rows the im2col stays in cache, 5-8x faster. Each
    # output is the same sum in the same order, bitwise the whole-image result, when the row
    # length is a multiple of 8 (tests/eval/test_mri_metrics.py; with a ragged row the product's
    # vector tail falls elsewhere and the last bit may differ, so other widths run whole)
    rows = max(1, (8 << 20) // (size * size * (w + size) * 8))
    out = flat.new_empty(b * c, 1, h, w)
    for r in range(0, h, rows):
        out[..., r : r + rows, :] = torch.nn.functional.conv2d(flat[..., r : min(r + rows, h) + size - 1, :], k)
    return out.reshape(b, c, h, w)


def hfen(sr: Tensor, hr: Tensor, *, size: int = 15, sigma: float = 1.5) -> Tensor:
    """Per-image high-frequency error norm, (B,) float64 (Ravishankar & Bresler 2011).

    ``||LoG(sr) - LoG(hr)||_2 / ||LoG(hr)||_2`` with MATLAB's ``fspecial('log', 15, 1.5)`` and
    'symmetric' borders: the relative error of the edges and fine texture alone.
    """
    if sr.shape != hr.shape:
        raise ValueError(f"sr: expected the shape of hr {tuple(hr.shape)}, got {tuple(sr.shape)}")
    return _hfen_of(log_filter(sr, size, sigma), log_filter(hr, size, sigma))


def _hfen_of(e_sr: Tensor, e_hr: Tensor) -> Tensor:
    """HFEN from the two LoG responses."""
    return (e_sr - e_hr).pow(2).sum(dim=(1, 2, 3)).sqrt() / e_hr.pow(2).sum(dim=(1, 2, 3)).sqrt()


def high_frequency_energy(x: Tensor, *, cutoff: float) -> Tensor:
    """Spectral energy above ``cutoff`` (fraction of Nyquist) per image, (B,) float64.

    Each channel has its mean removed and is multiplied by a 2-D Hann window (so the image
    border does not leak energy into every frequency); the energy is the sum of
    ``|FFT|^2`` over frequencies with ``sqrt(fy^2 + fx^2) / 0.5 > cutoff`` (fy, fx in
    cycles per pixel), summed over channels.
    """
    check_image(x, "x")
    x = x.double()
    h, w = x.shape[-2:]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    window_y = torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device)
    window_x = torch.hann_window(w, periodic=False, dtype=x.dtype, device=x.device)
    x = x * window_y[:, None] * window_x[None, :]
    power = torch.fft.fft2(x).abs().pow(2)
    fy = torch.fft.fftfreq(h, dtype=x.dtype, device=x.device)[:, None]
    fx = torch.fft.fftfreq(w, dtype=x.dtype, device=x.device)[None, :]
    band = (torch.sqrt(fy**2 + fx**2) / 0.5) > cutoff
    return (power * band).sum(dim=(1, 2, 3))


def sharpness_ratio(sr: Tensor, hr: Tensor, *, cutoff: float = 0.125) -> Tensor:
    """High-frequency energy of SR over that of HR, (B,) float64 (see docs/evaluation.md).

    1.0: as much fine detail as the truth; < 1 blurrier (bicubic x4 with the default cutoff
    0.5 / scale: about 0.25-0.5); > 1 noisier or over-sharpened. NaN where HR has no energy
    in the band.
    """
    if sr.shape != hr.shape:
        raise ValueError(f"sr: expected the shape of hr {tuple(hr.shape)}, got {tuple(sr.shape)}")
    e_sr = high_frequency_energy(sr, cutoff=cutoff)
    e_hr = high_frequency_energy(hr, cutoff=cutoff)
    return torch.where(e_hr > 0, e_sr / e_hr.clamp_min(torch.finfo(e_hr.dtype).tiny), float("nan"))


class MetricSuite:
    """Every metric for a batch of SR/HR pairs under one set of conventions.

    ``suite(sr, hr)`` returns ``{metric: np.ndarray (B,)}`` with the metrics in
    :attr:`names`. LPIPS is skipped (with a message in :attr:`notes`) when its weights cannot
    be found; MS-SSIM (optional, ``ms_ssim=True``) needs a cropped short side of at least 161
    pixels (five scales), else it is NaN for that image, with a note.
    """

    def __init__(self, conv: Conventions, *, lpips: bool = True, ms_ssim: bool = False) -> None:
        self.conv = conv
        self.notes: list[str] = []
        self._lpips: torch.nn.Module | None = None
        self._ms_ssim = ms_ssim
        self._hr_log: tuple[Tensor, int, Tensor] | None = None  # (hr, its version, LoG of its prepared form)
        if lpips:
            self._lpips = self._build_lpips()

    def _build_lpips(self) -> torch.nn.Module | None:
        from diffsr.losses.perceptual import LPIPSLoss

        try:
            model = LPIPSLoss(
                net=self.conv.lpips_net,
                weights=self.conv.lpips_weights,
                backbone_weights=self.conv.lpips_backbone_weights,
            )
        except ConfigError as err:
            message = f"LPIPS skipped: {err}"
            log.warning(message)
            self.notes.append(message)
            return None
        return model.eval().requires_grad_(False)

    @property
    def names(self) -> list[str]:
        """The metric keys produced, in report order."""
        names = ["psnr", "ssim"]
        if self._ms_ssim:
            names.append("ms_ssim")
        if self._lpips is not None:
            names.append("lpips")
        return [*names, "nrmse", "nmse", "hfen", "sharpness"]

    def _note(self, message: str) -> None:
        if message not in self.notes:
            log.warning(message)
            self.notes.append(message)

    @torch.no_grad()
    def __call__(self, sr: Tensor, hr: Tensor) -> dict[str, np.ndarray]:
        """Per-image metrics of (B, C, H, W) SR against HR."""
        conv = self.conv
        sr_y, hr_y = prepare(sr.detach().cpu(), hr.detach().cpu(), conv)
        out: dict[str, Tensor] = {
            "psnr": psnr(sr_y, hr_y, data_range=conv.data_range),
            "ssim": ssim_metric(sr_y, hr_y, data_range=conv.data_range),
        }
        if self._ms_ssim:
            out["ms_ssim"] = self._ms_ssim_values(sr_y, hr_y)
        if self._lpips is not None:
            out["lpips"] = self._lpips_values(sr, hr)
        out["nmse"] = nmse(sr_y, hr_y)
        out["nrmse"] = out["nmse"].sqrt()
        out["hfen"] = self._hfen_values(sr_y, hr_y, hr)
        out["sharpness"] = sharpness_ratio(sr_y, hr_y, cutoff=conv.sharpness_cutoff)
        return {name: out[name].double().cpu().numpy() for name in self.names}

    def _hfen_values(self, sr_y: Tensor, hr_y: Tensor, hr: Tensor) -> Tensor:
        if min(sr_y.shape[-2:]) < 8:
            self._note("HFEN skipped on images whose cropped short side is < 8 px (15x15 LoG filter)")
            return torch.full((sr_y.shape[0],), float("nan"), dtype=torch.float64)
        if sr_y.shape != hr_y.shape:
            return hfen(sr_y, hr_y)  # its error message
        # every method of an image is scored against the same HR: its LoG once, not once per method
        # (the cache holds the HR tensor itself, so it cannot be confused with a later one)
        cached = self._hr_log
        if cached is not None and cached[0] is hr and cached[1] == hr._version:
            e_hr = cached[2]
        else:
            e_hr = log_filter(hr_y)
            self._hr_log = (hr, hr._version, e_hr)
        return _hfen_of(log_filter(sr_y), e_hr)

    def _ms_ssim_values(self, sr_y: Tensor, hr_y: Tensor) -> Tensor:
        if min(sr_y.shape[-2:]) < MS_SSIM_MIN_SIZE:
            # fewer scales would be a different metric: skip rather than mix
            self._note(
                f"MS-SSIM skipped on images whose cropped short side is < {MS_SSIM_MIN_SIZE} px (5 scales, window 11)"
            )
            return torch.full((sr_y.shape[0],), float("nan"), dtype=torch.float64)
        return ms_ssim_metric(sr_y, hr_y, data_range=self.conv.data_range)

    def _lpips_values(self, sr: Tensor, hr: Tensor) -> Tensor:
        assert self._lpips is not None
        sr_c, hr_c = prepare(sr.detach().cpu(), hr.detach().cpu(), self.conv, luma=False)
        # LPIPSLoss takes [0, 1] images and maps them to [-1, 1] itself
        sr_c, hr_c = (sr_c / self.conv.data_range).float(), (hr_c / self.conv.data_range).float()
        if sr_c.shape[1] == 1:
            sr_c, hr_c = sr_c.expand(-1, 3, -1, -1), hr_c.expand(-1, 3, -1, -1)
        param = next(self._lpips.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        values = self._lpips(sr_c.to(device), hr_c.to(device))
        return values.reshape(sr.shape[0]).double().cpu()
