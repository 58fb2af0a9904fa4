"""Bootstrap statistics: properties and a normal-theory reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffsr.eval.stats import bootstrap_ci, paired_difference, summarize


def test_ci_contains_the_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(30.0, 2.0, size=20)
    large = rng.normal(30.0, 2.0, size=2000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    # width ~ 1 / sqrt(n): 100x the data -> about 10x narrower
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5


def test_ci_matches_normal_theory_for_gaussian_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, size=400)
    lo, hi = bootstrap_ci(x, seed=3)
    half = 1.959964 * x.std(ddof=1) / math.sqrt(x.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.2 * half)


def test_seeded_and_reproducible() -> None:
    x = np.random.default_rng(2).random(30)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    assert bootstrap_ci(x, seed=5) != bootstrap_ci(x, seed=6)


def test_summarize_mean_std_and_non_finite_values() -> None:
    x = [1.0, 2.0, 4.0, float("inf"), float("nan")]
    s = summarize(x)
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(7.0 / 3.0)
    assert s["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    lo, hi = s["ci95"]
    assert 1.0 <= lo <= s["mean"] <= hi <= 4.0
    one = summarize([3.0])
    assert one["ci95"] == [3.0, 3.0] and one["std"] == 0.0
    none = summarize([])
    assert none["n"] == 0 and math.isnan(none["mean"])


def test_paired_difference_of_identical_methods_is_zero() -> None:
    x = np.random.default_rng(3).normal(28.0, 3.0, size=50)
    p = paired_difference(x, x.copy())
    assert p["mean_diff"] == 0.0 and p["ci95"] == [0.0, 0.0]
    assert p["wins"] == p["losses"] == 0 and p["n"] == 50


def test_paired_difference_sees_a_consistent_small_gain() -> None:
    rng = np.random.default_rng(4)
    reference = rng.normal(28.0, 3.0, size=40)  # large between-image spread
    method = reference + 0.1 + 0.02 * rng.standard_normal(40)  # always ~0.1 dB better
    p = paired_difference(method, reference)
    assert p["mean_diff"] == pytest.approx(np.mean(method - reference))
    assert 0.0 < p["ci95"][0] < p["mean_diff"] < p["ci95"][1]
    assert p["wins"] == 40
    # the unpaired intervals overlap: only the paired comparison resolves the gain
    lo_m, hi_m = bootstrap_ci(method)
    lo_r, hi_r = bootstrap_ci(reference)
    assert lo_m < hi_r and lo_r < hi_m


def test_paired_difference_drops_pairs_with_non_finite_values() -> None:
    p = paired_difference([1.0, float("inf"), 3.0], [0.5, 1.0, float("nan")])
    assert p["n"] == 1 and p["mean_diff"] == 0.5
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
