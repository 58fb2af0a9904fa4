"""Summary statistics for per-image metrics: mean, std, bootstrap CIs, paired differences.

Plain numpy. Confidence intervals are 95 % percentile-bootstrap intervals of the mean
(2000 resamples of the images with replacement, seeded, so a report is reproducible). A
paired comparison resamples the per-image *differences* method - reference, which removes
the between-image variance that dominates unpaired intervals: two methods whose CIs overlap
can still differ clearly when one is better on almost every image.

Non-finite values (an infinite PSNR of an exact copy, an undefined sharpness ratio) are left
out; ``n`` says how many values were used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of the finite ``values``.

    Resamples ``len(values)`` values with replacement ``n_boot`` times (numpy
    ``default_rng(seed)``) and returns the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the resampled means. One value gives ``(v, v)``; none gives ``(nan, nan)``.
    """
    x = _finite(values)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    index = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[index].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(
    values: Sequence[float] | np.ndarray, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> dict[str, Any]:
    """``{"mean", "std", "ci95": [lo, hi], "n"}`` of the finite values (std with ddof=1)."""
    x = _finite(values)
    mean = float(x.mean()) if x.size else float("nan")
    std = float(x.std(ddof=1)) if x.size > 1 else (0.0 if x.size == 1 else float("nan"))
    lo, hi = bootstrap_ci(x, n_boot=n_boot, level=level, seed=seed)
    return {"mean": mean, "std": std, "ci95": [lo, hi], "n": int(x.size)}


def paired_difference(
    values: Sequence[float] | np.ndarray,
    reference: Sequence[float] | np.ndarray,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired comparison on the same images: ``{"mean_diff", "ci95", "n", "wins", "losses"}``.

    ``mean_diff`` is the mean of ``values - reference`` over the images where both are finite;
    ``ci95`` its percentile-bootstrap interval; ``wins`` / ``losses`` count images where the
    difference is > 0 / < 0 (whether that is better depends on the metric).
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    b = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.size} values vs {b.size} reference values")
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    lo, hi = bootstrap_ci(diff, n_boot=n_boot, level=level, seed=seed)
    return {
        "mean_diff": float(diff.mean()) if diff.size else float("nan"),
        "ci95": [lo, hi],
        "n": int(diff.size),
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
    }
