"""Calibrated intervals: conformal risk control and RCPS hold their guarantees; lam-hat is the hand-computed bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffsr.core.errors import ConfigError
from diffsr.sampling.calibration import (
    Calibration,
    CalibrationError,
    covering_lambdas,
    crc_lambda,
    fit_lambda,
    hb_upper_bound,
    interval,
    interval_scales,
    min_images,
    miscoverage,
    rcps_lambda,
)


def _synthetic(rng: np.random.Generator, n_images: int, *, pixels: int = 400, samples: int = 8):
    """Images whose truth is one more draw of a Gaussian posterior with a per-image, per-pixel scale.

    The model's N samples are draws of the same posterior, so the sample-std intervals are
    informative but their lam must be fitted (the N-sample std under-estimates the spread).
    Returns per-image (y, mean, lo, up).
    """
    out = []
    for _ in range(n_images):
        scale = rng.uniform(0.02, 0.2) * rng.lognormal(0.0, 0.5, pixels)
        centre = rng.uniform(0.2, 0.8, pixels)
        draws = centre + scale * rng.standard_normal((samples, pixels))
        y = centre + scale * rng.standard_normal(pixels)
        mean, lo, up = interval_scales(draws, "std")
        out.append((y, mean, lo, up))
    return out


def _risk(images, lam: float) -> float:
    return float(np.mean([miscoverage(y, *interval(m, lo, up, lam)) for y, m, lo, up in images]))


def test_crc_holds_its_risk_over_many_random_splits() -> None:
    rng = np.random.default_rng(0)
    alpha, n_cal, n_test, splits = 0.1, 30, 30, 250
    risks = []
    for _ in range(splits):
        pool = _synthetic(rng, n_cal + n_test, pixels=200)
        cal, test = pool[:n_cal], pool[n_cal:]
        fit = crc_lambda([covering_lambdas(*im) for im in cal], alpha)
        risks.append(_risk(test, fit.lam))
    # E[test risk] <= alpha (Angelopoulos et al. 2024, Thm 1); the mean over splits estimates it
    assert np.mean(risks) <= alpha + 0.01
    assert np.mean(risks) > alpha - 0.05  # and it is not trivially conservative


def test_rcps_exceeds_alpha_in_at_most_delta_of_splits() -> None:
    rng = np.random.default_rng(1)
    alpha, delta, n_cal, n_test, splits = 0.1, 0.1, 200, 200, 200
    exceed = 0
    for _ in range(splits):
        pool = _synthetic(rng, n_cal + n_test, pixels=60)
        cal, test = pool[:n_cal], pool[n_cal:]
        fit = rcps_lambda([covering_lambdas(*im) for im in cal], alpha, delta)
        exceed += _risk(test, fit.lam) > alpha  # the test set's mean stands in for the expectation
    assert exceed / splits <= delta + 0.03


def test_lambda_hat_equals_the_hand_computed_bounds() -> None:
    # 4 images x 3 pixels: covering lambdas written out
    per_image = [np.array([0.1, 0.5, 2.0]), np.array([0.2, 0.2, 0.9]), np.array([1.5, 0.0, 0.3]),
                 np.array([0.7, 3.0, 0.4])]
    candidates = sorted({0.0, *np.concatenate(per_image).tolist()})

    def risk(lam: float) -> float:  # mean over images of the fraction of pixels with lam_p > lam
        return float(np.mean([np.mean(v > lam) for v in per_image]))

    n, alpha = 4, 0.3
    # CRC needs R(lam) <= ((n + 1) alpha - 1) / n = 0.125. By hand: R(2.0) = (0 + 0 + 0 + 1/3) / 4 = 1/12
    # (only 3.0 > 2.0) passes; R(1.5) = (1/3 + 0 + 0 + 1/3) / 4 = 1/6 fails; so lam-hat = 2.0
    crc = min(c for c in candidates if n / (n + 1) * risk(c) + 1 / (n + 1) <= alpha)
    fit = crc_lambda(per_image, alpha)
    assert fit.lam == crc == 2.0
    assert fit.threshold == pytest.approx(0.125) and fit.empirical_risk == pytest.approx(1 / 12)


def test_crc_and_rcps_on_a_fixed_array_match_brute_force_and_scipy() -> None:
    from scipy.optimize import brentq
    from scipy.stats import binom

    rng = np.random.default_rng(5)
    per_image = [rng.exponential(1.0, size=rng.integers(5, 40)) for _ in range(60)]
    values = sorted({0.0, *np.concatenate(per_image).tolist()})

    def risk(lam: float) -> float:
        return float(np.mean([np.mean(v > lam) for v in per_image]))

    n, alpha, delta = len(per_image), 0.15, 0.1
    crc = min(c for c in values if n / (n + 1) * risk(c) + 1 / (n + 1) <= alpha)
    assert crc_lambda(per_image, alpha).lam == crc

    # the Hoeffding-Bentkus bound written from Bates et al. 2021 with SciPy (independent code)
    def h1(y: float, mu: float) -> float:
        return (y * math.log(y / mu) if y > 0 else 0.0) + (1 - y) * math.log((1 - y) / (1 - mu))

    def ucb(rhat: float) -> float:
        def tail(mu: float) -> float:
            hoeffding = -n * h1(min(mu, rhat), mu)
            bentkus = math.log(max(binom.cdf(math.ceil(n * rhat - 1e-12), n, mu), 1e-300)) + 1
            return min(hoeffding, bentkus) - math.log(delta)
        return 1.0 if tail(1 - 1e-10) > 0 else brentq(tail, rhat, 1 - 1e-10, xtol=1e-12)

    for rhat in (0.0, 0.01, 0.05, 0.1):
        assert hb_upper_bound(rhat, n, delta) == pytest.approx(ucb(rhat), abs=1e-8)
    rcps = min(c for c in values if ucb(risk(c)) <= alpha)
    assert rcps_lambda(per_image, alpha, delta).lam == rcps


def test_intervals_are_nested_in_lambda() -> None:
    rng = np.random.default_rng(2)
    draws = rng.normal(0.5, 0.1, size=(6, 5, 7))
    for kind in ("std", "quantile"):
        mean, lo, up = interval_scales(draws, kind)  # type: ignore[arg-type]
        last = None
        for lam in (0.0, 0.3, 1.0, 2.5):
            lower, upper = interval(mean, lo, up, lam)
            if last is not None:
                assert (lower <= last[0]).all() and (upper >= last[1]).all()
            last = (lower, upper)
        y = rng.normal(0.5, 0.2, size=(5, 7))
        lams = covering_lambdas(y, mean, lo, up)
        for lam in (0.3, 1.0, 2.5):  # covered exactly when the pixel's covering lambda is <= lam
            lower, upper = interval(mean, lo, up, lam)
            assert np.array_equal((y >= lower) & (y <= upper), lams <= lam)


def test_too_few_images_say_how_many_are_needed() -> None:
    few = [np.zeros(3)] * 5
    with pytest.raises(CalibrationError, match=r"needs at least 9 calibration images, got 5"):
        crc_lambda(few, 0.1)
    need = min_images(0.1, 0.1)
    assert hb_upper_bound(0.0, need, 0.1) <= 0.1 < hb_upper_bound(0.0, need - 1, 0.1)
    with pytest.raises(CalibrationError, match=rf"needs at least {need} calibration images"):
        rcps_lambda([np.zeros(3)] * (need - 1), 0.1, 0.1)
    with pytest.raises(ConfigError, match="alpha must be in"):
        fit_lambda(few * 4, 1.5)


def test_a_calibration_with_other_sampling_options_is_refused(tmp_path) -> None:
    cal = Calibration(lam=1.3, method="crc", alpha=0.1, delta=None, n_images=20, interval="std",
                      sampling={"samples": 8, "steps": 1, "detail": None, "consistency": "none", "guidance": 0.0,
                                "seed": 0}, data={}, empirical_risk=0.08)
    path = cal.write(tmp_path)
    read = Calibration.read(path)
    assert read.lam == 1.3 and read.sampling["samples"] == 8
    read.check_sampling({"samples": 8, "steps": 1})
    with pytest.raises(CalibrationError, match="fitted with samples=8, this call asks for samples=4"):
        read.check_sampling({"samples": 4, "steps": 1})
    with pytest.raises(CalibrationError, match="fitted with consistency=none"):
        read.check_sampling({"consistency": "backprojection"})
