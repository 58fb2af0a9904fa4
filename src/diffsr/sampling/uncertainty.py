"""Uncertainty maps from repeated sampling, and how well they predict the actual error.

A diffusion model draws different SR images for different noise; ``diffsr sr --samples N``
writes their mean and the per-pixel standard deviation (see :func:`diffsr.sampling.infer.sr_files`).
Here: is that spread a useful error predictor? With the absolute error of the mean,
``e = |mean - hr|``, and the predicted std ``s``:

- :func:`std_error_correlation`: Pearson or Spearman correlation of ``s`` and ``e`` over pixels
  (0: the map says nothing about where the errors are; 1: perfect ranking / linear relation).
- :func:`error_vs_std_curve`: pixels binned by ``s`` (equal-count bins by default); per bin the
  mean ``s``, the mean ``e`` and the RMS error. For a calibrated Gaussian posterior (the truth
  behaves like one more sample) ``hr - mean ~ N(0, s^2 (1 + 1/N))``, so mean ``e`` =
  ``sqrt(2 / pi) sqrt(1 + 1/N) s``: the curve is a straight line of that slope.
- :func:`calibrate`: both, plus the calibration ratio
  ``mean(e) / (sqrt(2 / pi) sqrt(1 + 1/N) mean(s))`` (1 = calibrated, > 1 over-confident,
  < 1 under-confident) and the coverage ``P(e <= k s sqrt(1 + 1/N))`` for k = 1, 2 (a Student-t
  prediction interval: ``P(|t_{N-1}| <= k)`` when calibrated).
- :class:`CalibrationAccumulator` pools pixels over a test set; :func:`plot_error_vs_std`
  draws the curve.

Everything is computed in float64 on the CPU; inputs may be tensors or numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CalibrationAccumulator",
    "CalibrationReport",
    "ErrorStdCurve",
    "calibrate",
    "calibration",
    "draw_samples",
    "error_vs_std_curve",
    "plot_error_vs_std",
    "sample_mean_std",
    "std_error_correlation",
]

ArrayLike = Tensor | np.ndarray
#: sqrt(2 / pi) = E|z| for z ~ N(0, 1)
HALF_NORMAL_MEAN = math.sqrt(2.0 / math.pi)


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _flat(std: ArrayLike, error: ArrayLike, mask: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (std, error) over the valid pixels; the mask broadcasts over channels."""
    s, e = _np(std), _np(error)
    if s.shape != e.shape:
        raise ValueError(f"std {s.shape} and error {e.shape} differ")
    if mask is not None:
        m = np.broadcast_to(_np(mask) > 0.5, s.shape)
        s, e = s[m], e[m]
    s, e = s.reshape(-1), e.reshape(-1)
    if s.size < 2:
        raise ValueError(f"need at least 2 valid pixels, got {s.size}")
    if not (np.isfinite(s).all() and np.isfinite(e).all()):
        raise ValueError("std and error must be finite")
    return s, e


# ----------------------------------------------------------------------------- sampling


def sample_mean_std(samples: ArrayLike | Sequence[ArrayLike]) -> tuple[Tensor, Tensor]:
    """(mean, std) over the first axis of N >= 2 samples (N, ...); std with N - 1 (unbiased variance)."""
    if isinstance(samples, Sequence) and not isinstance(samples, np.ndarray | Tensor):
        stack = torch.stack([torch.as_tensor(s) for s in samples])
    else:
        stack = torch.as_tensor(samples)
    if stack.shape[0] < 2:
        raise ValueError(f"a standard deviation needs at least 2 samples, got {stack.shape[0]}")
    stack = stack.to(torch.float64)
    return stack.mean(0), stack.std(0, correction=1)


def draw_samples(fn: Callable[[int], Tensor], n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(mean, std) of ``fn(seed + k)`` for k < n, e.g. ``lambda s: super_resolve(m, lr, seed=s)``."""
    if n < 2:
        raise ValueError(f"draw_samples: n must be >= 2, got {n}")
    return sample_mean_std([fn(seed + k).detach().cpu() for k in range(n)])


# ----------------------------------------------------------------------------- statistics


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank (as scipy.stats.rankdata - 1)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.arange(x.size, dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def std_error_correlation(
    std: ArrayLike,
    error: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    method: Literal["pearson", "spearman"] = "pearson",
) -> float:
    """Correlation over pixels of the predicted std and the absolute error (same shapes).

    mask: 1 on the pixels to use (broadcast over channels). NaN when either map is constant.
    """
    s, e = _flat(std, error, mask)
    if method == "pearson":
        return _pearson(s, e)
    if method == "spearman":
        return _pearson(_ranks(s), _ranks(e))
    raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")


@dataclass
class ErrorStdCurve:
    """Per bin of predicted std: edges (bins + 1), mean std, mean |error|, RMS error, pixel count."""

    edges: list[float]
    mean_std: list[float]
    mean_abs_error: list[float]
    rms_error: list[float]
    count: list[int]

    def to_dict(self) -> dict[str, list[Any]]:
        """JSON-ready lists."""
        return asdict(self)


def error_vs_std_curve(
    std: ArrayLike,
    error: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> ErrorStdCurve:
    """Pixels binned by predicted std; the mean std, mean |error| and RMS error of each bin.

    strategy "quantile": equal-count bins (repeated edges from ties are merged, so there may be
    fewer bins); "uniform": equal-width bins over [min, max]. Empty bins are dropped.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    s, e = _flat(std, error, mask)
    if strategy == "quantile":
        edges = np.unique(np.quantile(s, np.linspace(0.0, 1.0, bins + 1)))
    elif strategy == "uniform":
        edges = np.linspace(s.min(), s.max(), bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    if edges.size < 2:  # a constant std map: one bin
        edges = np.array([s.min(), s.max()])
    # bin i holds edges[i] <= s < edges[i + 1]; the last bin also holds s == max
    index = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, edges.size - 2)
    n_bins = edges.size - 1
    count = np.bincount(index, minlength=n_bins)
    sum_s = np.bincount(index, weights=s, minlength=n_bins)
    sum_e = np.bincount(index, weights=e, minlength=n_bins)
    sum_e2 = np.bincount(index, weights=e * e, minlength=n_bins)
    keep = count > 0
    c = np.maximum(count, 1)
    return ErrorStdCurve(
        edges=[float(v) for v in edges],
        mean_std=[float(v) for v in (sum_s / c)[keep]],
        mean_abs_error=[float(v) for v in (sum_e / c)[keep]],
        rms_error=[float(v) for v in np.sqrt(sum_e2 / c)[keep]],
        count=[int(v) for v in count[keep]],
    )


@dataclass
class CalibrationReport:
    """How well a predicted std map explains the absolute error (see the module docstring)."""

    pixels: int
    n_samples: int | None
    pearson: float
    spearman: float
    ratio: float
    coverage: dict[str, float]
    mean_std: float
    mean_abs_error: float
    curve: ErrorStdCurve = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the curve as lists)."""
        out = asdict(self)
        out["curve"] = self.curve.to_dict()
        return out


def calibrate(
    mean: ArrayLike,
    std: ArrayLike,
    hr: ArrayLike,
    *,
    n_samples: int | None = None,
    mask: ArrayLike | None = None,
    bins: int = 10,
) -> CalibrationReport:
    """Calibration of a std map for the mean prediction ``mean`` against the truth ``hr``.

    n_samples: N, the number of samples behind ``mean`` and ``std`` (the expected error then
    includes the mean's own spread, factor ``sqrt(1 + 1/N)``); None treats ``std`` as the
    std of the prediction's error itself (factor 1).
    """
    m, s_all, h = _np(mean), _np(std), _np(hr)
    if m.shape != h.shape or s_all.shape != h.shape:
        raise ValueError(f"mean {m.shape}, std {s_all.shape} and hr {h.shape} must have one shape")
    s, e = _flat(s_all, np.abs(m - h), mask)
    inflate = math.sqrt(1.0 + 1.0 / n_samples) if n_samples else 1.0
    scale = s * inflate
    predicted = HALF_NORMAL_MEAN * float(scale.mean())
    ratio = float(e.mean()) / predicted if predicted > 0 else float("inf")
    coverage = {str(k): float((e <= k * scale).mean()) for k in (1, 2)}
    return CalibrationReport(
        pixels=int(s.size),
        n_samples=n_samples,
        pearson=_pearson(s, e),
        spearman=_pearson(_ranks(s), _ranks(e)),
        ratio=ratio,
        coverage=coverage,
        mean_std=float(s.mean()),
        mean_abs_error=float(e.mean()),
        curve=error_vs_std_curve(s, e, bins=bins),
    )


def calibration(
    samples: ArrayLike | Sequence[ArrayLike], hr: ArrayLike, *, mask: ArrayLike | None = None, bins: int = 10
) -> CalibrationReport:
    """:func:`calibrate` for N samples (N, ...) of the SR image: mean and std taken here."""
    mean, std = sample_mean_std(samples)
    n = len(samples) if isinstance(samples, Sequence) else int(samples.shape[0])
    return calibrate(mean, std, hr, n_samples=n, mask=mask, bins=bins)


class CalibrationAccumulator:
    """Pools (mean, std, hr) pixels over a test set, then :meth:`result` calibrates them together.

    ``crop_border`` pixels are removed from each side first (as for PSNR). Memory: two float32
    values per pixel.
    """

    def __init__(self, *, n_samples: int | None = None, crop_border: int = 0, bins: int = 10) -> None:
        self.n_samples, self.crop_border, self.bins = n_samples, int(crop_border), bins
        self._std: list[np.ndarray] = []
        self._err: list[np.ndarray] = []

    def add(self, mean: ArrayLike, std: ArrayLike, hr: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Add one image (any shape ending in H, W; the mask broadcasts)."""
        m, s, h = _np(mean), _np(std), _np(hr)
        if m.shape != h.shape or s.shape != h.shape:
            raise ValueError(f"mean {m.shape}, std {s.shape} and hr {h.shape} must have one shape")
        e = np.abs(m - h)
        mk = None if mask is None else np.broadcast_to(_np(mask), h.shape)
        b = self.crop_border
        if b:
            s, e = s[..., b:-b, b:-b], e[..., b:-b, b:-b]
            mk = None if mk is None else mk[..., b:-b, b:-b]
        fs, fe = _flat(s, e, mk)
        self._std.append(fs.astype(np.float32))
        self._err.append(fe.astype(np.float32))

    def result(self) -> CalibrationReport:
        """The pooled calibration (ValueError if nothing was added)."""
        if not self._std:
            raise ValueError("CalibrationAccumulator: no images added")
        s = np.concatenate(self._std).astype(np.float64)
        e = np.concatenate(self._err).astype(np.float64)
        # calibrate() takes mean and hr: mean = e, hr = 0 reproduces |mean - hr| = e
        return calibrate(e, s, np.zeros_like(e), n_samples=self.n_samples, bins=self.bins)


# ----------------------------------------------------------------------------- figure


def plot_error_vs_std(
    curves: ErrorStdCurve | dict[str, ErrorStdCurve],
    path: str | Path,
    *,
    n_samples: int | None = None,
    title: str | None = None,
) -> Path:
    """Mean |error| against mean predicted std per bin (one line per method), with the
    calibrated-Gaussian line ``sqrt(2/pi) sqrt(1 + 1/N) s``; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsr.core.atomic import atomic_path

    if isinstance(curves, ErrorStdCurve):
        curves = {"model": curves}
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=120)
    top = 0.0
    for label, curve in curves.items():
        ax.plot(curve.mean_std, curve.mean_abs_error, marker="o", ms=3, label=label)
        top = max(top, max(curve.mean_std, default=0.0))
    inflate = math.sqrt(1.0 + 1.0 / n_samples) if n_samples else 1.0
    ax.plot([0.0, top], [0.0, HALF_NORMAL_MEAN * inflate * top], "k--", lw=1, label="calibrated")
    ax.set_xlabel("predicted std (mean per bin)")
    ax.set_ylabel("|error| (mean per bin)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
