"""Calibrated per-pixel intervals with a distribution-free guarantee on held-out images.

From N samples of the model for one image, every pixel gets a nested family of intervals

    [mean - lam * lo, mean + lam * up]          lam >= 0

with (lo, up) = (std, std) (``interval="std"``) or the distances from the mean to the samples'
alpha/2 and 1 - alpha/2 quantiles (``interval="quantile"``). The loss of an image is the fraction
of its pixels (inside an optional mask) that fall outside their interval. It never increases with
lam, which is all the two guarantees below need. lam-hat is fitted on n calibration images:

- **Conformal risk control** (Angelopoulos, Bates, Fisch, Lei, Schuster, ICLR 2024), the
  default: lam-hat = inf{lam : n/(n+1) R_n(lam) + B/(n+1) <= alpha}, with R_n the mean loss on
  the calibration images and B = 1 the largest loss. Then E[loss of a new image] <= alpha over
  the draw of calibration and test images. It needs n >= 1/alpha - 1 images.
- **Risk-controlling prediction sets** (Bates et al. 2021; Angelopoulos et al. 2022,
  "Image-to-image regression with distribution-free uncertainty quantification"), with
  ``delta``: lam-hat = inf{lam : R+(lam) <= alpha}, with R+ the Hoeffding-Bentkus upper
  confidence bound on the mean loss. Then, with probability >= 1 - delta over the calibration
  set, the expected loss of a new image is <= alpha.

Both risks are step functions of lam. lam-hat is computed exactly from every pixel's own
covering value ``lam_p = max((mean - y) / lo, (y - mean) / up)``, not on a grid: the risk at lam
is a weighted count of the pixels whose lam_p exceeds lam. The same fit gives a constant-width
band around any point estimate (``lo = up = 1``): split conformal on |error|, the baseline that
uses no model uncertainty.

Everything is float64 NumPy; bounds are computed without SciPy (exact binomial tail).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from diffsr.core.errors import ConfigError, DiffsrError

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "CalibrationError",
    "LambdaFit",
    "covering_lambdas",
    "crc_lambda",
    "fit_lambda",
    "hb_upper_bound",
    "interval",
    "interval_scales",
    "min_images",
    "miscoverage",
    "rcps_lambda",
]

CALIBRATION_FILE = "calibration.json"
Interval = Literal["std", "quantile"]
ArrayLike = Any


class CalibrationError(DiffsrError):
    """A calibration that cannot be fitted (too few images) or does not match its use."""


# ----------------------------------------------------------------------------- intervals


def interval_scales(samples: ArrayLike, kind: Interval = "std", *, alpha: float = 0.1
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, lo, up) per pixel from N >= 2 samples (N, ...) in float64.

    ``std``: lo = up = the sample standard deviation (N - 1). ``quantile``: lo = mean - the
    alpha/2 quantile, up = the 1 - alpha/2 quantile - mean (both >= 0).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.shape[0] < 2:
        raise ConfigError(f"calibration: needs at least 2 samples per image, got {x.shape[0]}")
    mean = x.mean(axis=0)
    if kind == "std":
        std = x.std(axis=0, ddof=1)
        return mean, std, std
    if kind == "quantile":
        q_lo, q_hi = np.quantile(x, [alpha / 2, 1 - alpha / 2], axis=0)
        return mean, np.maximum(mean - q_lo, 0.0), np.maximum(q_hi - mean, 0.0)
    raise ConfigError(f"calibration: interval must be 'std' or 'quantile', got {kind!r}")


def interval(mean: ArrayLike, lo: ArrayLike, up: ArrayLike, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """The interval [mean - lam lo, mean + lam up] (float64 arrays)."""
    mean, lo, up = (np.asarray(a, dtype=np.float64) for a in (mean, lo, up))
    return mean - lam * lo, mean + lam * up


def covering_lambdas(y: ArrayLike, mean: ArrayLike, lo: ArrayLike, up: ArrayLike) -> np.ndarray:
    """Per pixel, the smallest lam whose interval holds y: max((mean - y) / lo, (y - mean) / up, 0).

    A pixel with a zero scale on the side where y lies is covered only when y equals the mean
    (lam 0), else never (inf).
    """
    y, mean, lo, up = (np.asarray(a, dtype=np.float64) for a in (y, mean, lo, up))
    below = np.maximum(mean - y, 0.0)
    above = np.maximum(y - mean, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        need_lo = np.where(below > 0, np.divide(below, lo, out=np.full_like(below, np.inf), where=lo > 0), 0.0)
        need_up = np.where(above > 0, np.divide(above, up, out=np.full_like(above, np.inf), where=up > 0), 0.0)
    return np.maximum(need_lo, need_up)


def miscoverage(y: ArrayLike, lower: ArrayLike, upper: ArrayLike, mask: ArrayLike | None = None) -> float:
    """The loss of one image: the fraction of its (masked) pixels outside [lower, upper]."""
    y, lower, upper = (np.asarray(a, dtype=np.float64) for a in (y, lower, upper))
    out = (y < lower) | (y > upper)
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask) > 0.5, out.shape)
        return float(out[m].mean()) if m.any() else 0.0
    return float(out.mean())


# ----------------------------------------------------------------------------- bounds


def _log_binom_cdf(k: int, n: int, p: float) -> float:
    """log P(Bin(n, p) <= k), exactly (log-sum-exp of the pmf), for 0 < p < 1."""
    if k < 0:
        return -math.inf
    if k >= n:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k + 1)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _h1(y: float, mu: float) -> float:
    """KL divergence of Bernoulli(y) from Bernoulli(mu) (0 log 0 = 0)."""
    out = 0.0
    if y > 0:
        out += y * math.log(y / mu)
    if y < 1:
        out += (1 - y) * math.log((1 - y) / (1 - mu))
    return out


def _hb_log_p(mu: float, rhat: float, n: int) -> float:
    """log of the Hoeffding-Bentkus p-value of "mean loss >= mu" given the empirical mean rhat."""
    hoeffding = -n * _h1(min(mu, rhat), mu)
    bentkus = 1.0 + _log_binom_cdf(math.ceil(n * rhat - 1e-12), n, mu)  # log(e * P(Bin <= ceil(n rhat)))
    return min(hoeffding, bentkus)


def hb_upper_bound(rhat: float, n: int, delta: float, *, tol: float = 1e-10) -> float:
    """The Hoeffding-Bentkus upper confidence bound R+ on a [0, 1] loss's mean (Bates et al. 2021).

    R+ = sup{mu : p-value(mu) >= delta}: the mean is <= R+ with probability >= 1 - delta.
    """
    if not 0 < delta < 1:
        raise ConfigError(f"calibration: delta must be in (0, 1), got {delta}")
    rhat = min(max(float(rhat), 0.0), 1.0)
    log_delta = math.log(delta)
    lo, hi = rhat, 1.0 - 1e-12
    if _hb_log_p(hi, rhat, n) >= log_delta:
        return 1.0
    while hi - lo > tol:  # p-value falls as mu rises above rhat: bisection
        mid = 0.5 * (lo + hi)
        if _hb_log_p(mid, rhat, n) >= log_delta:
            lo = mid
        else:
            hi = mid
    return hi


def _rcps_threshold(n: int, alpha: float, delta: float) -> float:
    """The largest empirical risk whose HB bound is <= alpha (negative: none, the set is too small)."""
    if hb_upper_bound(0.0, n, delta) > alpha:
        return -1.0
    lo, hi = 0.0, alpha
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        if hb_upper_bound(mid, n, delta) <= alpha:
            lo = mid
        else:
            hi = mid
    return lo


def min_images(alpha: float, delta: float | None = None) -> int:
    """The fewest calibration images either guarantee can work with (even at zero empirical risk)."""
    if delta is None:
        return max(1, math.ceil(1 / alpha - 1))
    n = 1
    while hb_upper_bound(0.0, n, delta) > alpha:
        n = n * 2 if n < 64 else n + 64
    lo = n // 2 if n <= 64 else n - 64
    while lo + 1 < n:  # the smallest n in (lo, n]
        mid = (lo + n) // 2
        if hb_upper_bound(0.0, mid, delta) <= alpha:
            n = mid
        else:
            lo = mid
    return n


# ----------------------------------------------------------------------------- the fit


@dataclass
class LambdaFit:
    """lam-hat and what it was fitted from."""

    lam: float
    method: str  # "crc" | "rcps"
    alpha: float
    delta: float | None
    n: int
    threshold: float  # the largest empirical risk the guarantee accepts
    empirical_risk: float  # the calibration images' mean loss at lam


def _check_alpha(alpha: float, delta: float | None) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"calibration: alpha must be in (0, 1), got {alpha}")
    if delta is not None and not 0 < delta < 1:
        raise ConfigError(f"calibration: delta must be in (0, 1), got {delta}")


def _smallest_lambda(per_image: Sequence[np.ndarray], threshold: float) -> tuple[float, float]:
    """(the smallest lam with mean_i fraction_i(lam_p > lam) <= threshold, the risk there).

    per_image: each image's covering lambdas (its masked pixels). The risk is a weighted count of
    the pixels above lam (weight 1 / (n m_i)), so lam-hat is a weighted quantile of all of them.
    """
    n = len(per_image)
    values = np.concatenate([np.ravel(v) for v in per_image])
    weights = np.concatenate([np.full(np.size(v), 1.0 / (n * max(np.size(v), 1))) for v in per_image])
    order = np.argsort(-values, kind="stable")  # largest first
    values, weights = values[order], weights[order]
    # pixels tied at one value are covered or missed together: only group ends are candidates
    ends = np.flatnonzero(np.r_[values[1:] != values[:-1], True])
    tail = np.cumsum(weights)[ends]  # risk just below values[ends[j]]: every pixel down to that group missed
    ok = np.flatnonzero(tail <= threshold + 1e-15)
    # missing the top k groups is allowed: lam-hat is the value of the next group (covering it)
    k = ok[-1] + 1 if ok.size else 0
    if k >= len(ends):
        return 0.0, float(tail[-1]) if tail.size else 0.0
    lam = float(values[ends[k]])
    risk = float(tail[k - 1]) if k > 0 else 0.0
    if not math.isfinite(lam):
        raise CalibrationError(
            "calibration: pixels with a zero interval scale are missed at every lam; their share exceeds "
            "the target (use more samples, or interval='quantile' with more spread)"
        )
    return lam, risk


def crc_lambda(per_image: Sequence[np.ndarray], alpha: float) -> LambdaFit:
    """Conformal risk control: the smallest lam with n/(n+1) R_n(lam) + 1/(n+1) <= alpha."""
    _check_alpha(alpha, None)
    n = len(per_image)
    threshold = ((n + 1) * alpha - 1) / n if n else -1.0
    if threshold < 0:
        raise CalibrationError(
            f"calibration: conformal risk control at alpha {alpha:g} needs at least {min_images(alpha)} "
            f"calibration images, got {n}"
        )
    lam, risk = _smallest_lambda(per_image, threshold)
    return LambdaFit(lam, "crc", alpha, None, n, threshold, risk)


def rcps_lambda(per_image: Sequence[np.ndarray], alpha: float, delta: float) -> LambdaFit:
    """RCPS: the smallest lam whose Hoeffding-Bentkus bound on the mean loss is <= alpha."""
    _check_alpha(alpha, delta)
    n = len(per_image)
    threshold = _rcps_threshold(n, alpha, delta) if n else -1.0
    if threshold < 0:
        raise CalibrationError(
            f"calibration: RCPS at alpha {alpha:g}, delta {delta:g} needs at least {min_images(alpha, delta)} "
            f"calibration images (even with no miss at all), got {n}"
        )
    lam, risk = _smallest_lambda(per_image, threshold)
    return LambdaFit(lam, "rcps", alpha, delta, n, threshold, risk)


def fit_lambda(per_image: Sequence[np.ndarray], alpha: float, delta: float | None = None) -> LambdaFit:
    """Conformal risk control (``delta`` None) or RCPS (with ``delta``)."""
    return crc_lambda(per_image, alpha) if delta is None else rcps_lambda(per_image, alpha, delta)


# ----------------------------------------------------------------------------- the record


@dataclass
class Calibration:
    """What ``diffsr calibrate`` fitted, written as ``calibration.json`` beside the checkpoints.

    lam: lam-hat of the model's intervals. constant_width: the fitted half-width of the constant
    band around the 1-step output (split conformal, same guarantee). sampling: the options the
    samples were drawn with (N, steps, consistency, detail, seed): an ``sr`` call with other
    options is refused. data: the images it was fitted on.
    """

    lam: float
    method: str
    alpha: float
    delta: float | None
    n_images: int
    interval: str
    sampling: dict[str, Any]
    data: dict[str, Any]
    empirical_risk: float
    constant_width: float | None = None
    mask_threshold: float | None = None
    created: str = field(default_factory=lambda: _now())
    units: str = "model units in [0, 1]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        """Write atomically (``path`` a folder: ``<path>/calibration.json``)."""
        from diffsr.core.atomic import atomic_write_text

        path = Path(path)
        target = path / CALIBRATION_FILE if path.is_dir() else path
        atomic_write_text(target, json.dumps(self.to_dict(), indent=2) + "\n")
        return target

    @classmethod
    def read(cls, path: str | Path) -> Calibration:
        """Read a ``calibration.json`` (a one-line CalibrationError when it is not one)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError) as err:
            raise CalibrationError(f"{path}: not a diffsr calibration ({type(err).__name__})") from None

    def check_sampling(self, sampling: dict[str, Any], where: str = "sampling") -> None:
        """Refuse sampling options other than those the calibration was fitted with."""
        diff = {k: (self.sampling.get(k), v) for k, v in sampling.items() if self.sampling.get(k) != v}
        if diff:
            key, (fitted, asked) = next(iter(diff.items()))
            raise CalibrationError(
                f"{where}: the calibration was fitted with {key}={fitted}, this call asks for {key}={asked}; "
                "recalibrate (diffsr calibrate) or sample as it was fitted"
            )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def find_calibration(folder: str | Path) -> Calibration | None:
    """The calibration stored with a run or model folder (None when it has none)."""
    folder = Path(folder)
    for candidate in (folder / CALIBRATION_FILE, folder.parent.parent / CALIBRATION_FILE):
        if candidate.is_file():
            return Calibration.read(candidate)
    return None


# ----------------------------------------------------------------------------- with a model


def sampling_options(loaded: Any, samples: int, steps: int | None) -> dict[str, Any]:
    """The sampling options a calibration depends on (what ``diffsr sr`` must match)."""
    cfg = loaded.config.sample
    return {
        "samples": int(samples),
        "steps": steps or cfg.steps or loaded.model.process.default_steps,
        "detail": cfg.detail,
        "consistency": cfg.consistency,
        "guidance": cfg.guidance,
        "seed": cfg.seed,
    }


def draw(loaded: Any, lr: Any, samples: int, *, steps: int | None = None) -> np.ndarray:
    """N samples (N, B, C, H, W) of the model for ``lr`` (B, C, h, w), seeds ``sample.seed + k``
    (the draws ``diffsr sr --samples N`` makes), float64 in [0, 1]."""
    import torch

    from diffsr.sampling.infer import super_resolve

    if samples < 2:
        raise ConfigError(f"calibration: --samples must be >= 2 (intervals come from the spread), got {samples}")
    seed = loaded.config.sample.seed
    draws = [super_resolve(loaded, lr, steps=steps, seed=seed + k).cpu() for k in range(samples)]
    return torch.stack(draws).double().numpy()


def _region(x: np.ndarray, border: int) -> np.ndarray:
    return x[..., border:-border, border:-border] if border else x


@dataclass
class ImageIntervals:
    """One image's HR, the model's centre and scales, the 1-step output, and its mask (cropped)."""

    name: str
    hr: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    up: np.ndarray
    one_step: np.ndarray
    mask: np.ndarray | None

    def lambdas(self) -> np.ndarray:
        """The model's covering lambdas of the masked pixels (computed once)."""
        if "_lambdas" not in self.__dict__:
            lam = covering_lambdas(self.hr, self.mean, self.lo, self.up)
            self.__dict__["_lambdas"] = lam[self._m(lam)] if self.mask is not None else lam.ravel()
        return self.__dict__["_lambdas"]

    def band_lambdas(self) -> np.ndarray:
        """The constant band's covering half-widths |y - one_step| of the masked pixels (computed once)."""
        if "_band" not in self.__dict__:
            err = np.abs(self.hr - self.one_step)
            self.__dict__["_band"] = err[self._m(err)] if self.mask is not None else err.ravel()
        return self.__dict__["_band"]

    def _m(self, like: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.mask > 0.5, like.shape)  # type: ignore[operator]


def image_intervals(loaded: Any, item: Any, *, samples: int, steps: int | None, kind: Interval,
                    alpha: float, border: int, mask_threshold: float | None) -> ImageIntervals:
    """Draw the samples and the 1-step output for one evaluation item (:class:`~diffsr.data.eval_items.EvalItem`)."""
    from diffsr.sampling.infer import super_resolve

    stack = draw(loaded, item.lr, samples, steps=steps)
    mean, lo, up = interval_scales(stack, kind, alpha=alpha)
    one = super_resolve(loaded, item.lr, steps=1, seed=loaded.config.sample.seed).cpu().double().numpy()
    hr = item.hr.double().numpy()
    mask = (hr > mask_threshold).astype(np.float64) if mask_threshold is not None else None
    crop = [_region(a, border) if a is not None else None for a in (hr, mean, lo, up, one, mask)]
    return ImageIntervals(str(item.name), *crop)  # type: ignore[arg-type]


def fit_calibration(images: Sequence[ImageIntervals], *, alpha: float, delta: float | None, kind: Interval,
                    sampling: dict[str, Any], data: dict[str, Any], mask_threshold: float | None) -> Calibration:
    """Fit lam-hat for the model's intervals and the constant band's half-width on the same images."""
    model_fit = fit_lambda([im.lambdas() for im in images], alpha, delta)
    band_fit = fit_lambda([im.band_lambdas() for im in images], alpha, delta)
    return Calibration(lam=model_fit.lam, method=model_fit.method, alpha=alpha, delta=delta, n_images=len(images),
                       interval=kind, sampling=sampling, data=data, empirical_risk=model_fit.empirical_risk,
                       constant_width=band_fit.lam, mask_threshold=mask_threshold)


def interval_report(images: Sequence[ImageIntervals], calibration: Calibration) -> dict[str, Any]:
    """Risk (per image: the fraction of pixels outside) and mean width of three interval kinds on test images.

    - ``calibrated``: [mean - lam-hat lo, mean + lam-hat up];
    - ``constant_band``: the 1-step output +- the fitted constant half-width (no model uncertainty);
    - ``raw_std``: the uncalibrated samples' interval (lam = 1).
    Each with the mean risk, its 95 % bootstrap CI, the per-image risks and the mean width
    (upper - lower over the masked pixels), plus the whole risk-vs-width curve of each family.
    """
    from diffsr.eval.stats import summarize

    kinds = {
        "calibrated": lambda im: interval(im.mean, im.lo, im.up, calibration.lam),
        "raw_std": lambda im: interval(im.mean, im.lo, im.up, 1.0),
        "constant_band": lambda im: interval(im.one_step, 1.0, 1.0, calibration.constant_width or 0.0),
    }
    out: dict[str, Any] = {"alpha": calibration.alpha, "delta": calibration.delta, "method": calibration.method,
                           "lam": calibration.lam, "constant_width": calibration.constant_width,
                           "n_images": len(images)}
    for name, make in kinds.items():
        if name == "constant_band" and calibration.constant_width is None:
            continue
        risks, widths = [], []
        for im in images:
            lower, upper = make(im)
            risks.append(miscoverage(im.hr, lower, upper, im.mask))
            w = np.broadcast_to(upper - lower, im.hr.shape)
            widths.append(float(w[im._m(w)].mean()) if im.mask is not None else float(w.mean()))
        out[name] = {"risk": summarize(np.asarray(risks)), "width": float(np.mean(widths)),
                     "per_image": {im.name: r for im, r in zip(images, risks, strict=True)}}
    out["curves"] = _curves(images)
    return out


def _curves(images: Sequence[ImageIntervals], points: int = 40) -> dict[str, dict[str, list[float]]]:
    """Risk against mean width as lam (or the band's half-width) varies: the coverage-vs-width plot."""
    model_lams = np.concatenate([im.lambdas() for im in images])
    band_lams = np.concatenate([im.band_lambdas() for im in images])
    finite = model_lams[np.isfinite(model_lams)]
    grid_model = np.quantile(finite, np.linspace(0.5, 0.999, points)) if finite.size else np.zeros(1)
    grid_band = np.quantile(band_lams, np.linspace(0.5, 0.999, points)) if band_lams.size else np.zeros(1)
    curves: dict[str, dict[str, list[float]]] = {"model": {"width": [], "risk": []}, "constant_band": {"width": [],
                                                                                                      "risk": []}}
    for lam in grid_model:
        risk = np.mean([np.mean(im.lambdas() > lam) for im in images])
        width = np.mean([_mean_width(im, lam) for im in images])
        curves["model"]["width"].append(float(width))
        curves["model"]["risk"].append(float(risk))
    for c in grid_band:
        curves["constant_band"]["width"].append(float(2 * c))
        curves["constant_band"]["risk"].append(float(np.mean([np.mean(im.band_lambdas() > c) for im in images])))
    return curves


def _mean_width(im: ImageIntervals, lam: float) -> float:
    w = lam * (im.lo + im.up)
    return float(w[im._m(w)].mean()) if im.mask is not None else float(w.mean())


def plot_risk_vs_width(report: dict[str, Any], path: Path, title: str = "") -> None:
    """Coverage (risk) against mean interval width: the model's nested intervals, the constant band,
    and the calibrated, constant and raw points; the target alpha as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsr.core.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    curves = report["curves"]
    ax.plot(curves["model"]["width"], curves["model"]["risk"], label="model intervals (lam varies)")
    ax.plot(curves["constant_band"]["width"], curves["constant_band"]["risk"], "--", label="constant band")
    for key, marker in (("calibrated", "o"), ("raw_std", "s"), ("constant_band", "^")):
        if key in report:
            ax.plot([report[key]["width"]], [report[key]["risk"]["mean"]], marker, label=f"{key} (test)")
    ax.axhline(report["alpha"], color="grey", lw=0.8, ls=":", label=f"alpha {report['alpha']:g}")
    ax.set_xlabel("mean interval width ([0, 1] units)")
    ax.set_ylabel("risk: fraction of pixels outside")
    ax.set_title(title or "coverage vs width", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
