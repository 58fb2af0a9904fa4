"""Property-based tests (hypothesis): codecs, gates, schedules, the trainer's determinism helpers.

Each property is checked against an independent statement of what must hold (the input itself
for a lossless round trip, Python's ``bisect`` for bins, brute-force maxima, plain-float
formulas from DESIGN §3), on random shapes, channels, levels, layouts and parameters.
``max_examples`` stays small and ``deadline`` is off: the suite runs on slow shared CPUs.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffsr.losses.gates import BinsGate, HardGate, LinearGate, NoGate
from diffsr.losses.schedules import Adaptive, Constant, Linear, Ramp, Stages

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

weights = st.floats(0.0, 10.0, allow_nan=False)
times = st.lists(st.floats(0.0, 20.0, allow_nan=False), min_size=1, max_size=16)


def _codecs() -> object:
    """The codecs module, or skip while it is being written."""
    codecs = pytest.importorskip("diffsr.codecs")
    if not hasattr(codecs, "WaveletCodec") or not hasattr(codecs, "PixelCodec"):
        pytest.skip("diffsr.codecs has no WaveletCodec / PixelCodec yet")
    return codecs


# --------------------------------------------------------------------------- codecs


@FEW
@given(
    wavelet=st.sampled_from(["haar", "db2"]),
    levels=st.integers(1, 3),
    layout=st.sampled_from(["ll", "full", "all", "all_learnable"]),
    channels=st.sampled_from([1, 3]),
    batch=st.integers(1, 3),
    hk=st.integers(1, 3),
    wk=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_wavelet_codec_round_trip(wavelet: str, levels: int, layout: str, channels: int, batch: int, hk: int,
                                  wk: int, seed: int) -> None:
    codecs = _codecs()
    codec = codecs.WaveletCodec(wavelet=wavelet, levels=levels, layout=layout, channels=channels).double()
    f = codec.downsample
    assert f == 2**levels
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, hk * f, wk * f, generator=g, dtype=torch.float64)
    latent = codec.encode(x)
    assert tuple(latent.z.shape) == (batch, codec.latent_channels(channels), hk, wk)
    y = codec.decode(latent)
    assert y.shape == x.shape
    if codec.is_lossless:  # orthonormal wavelets with periodization: exact up to float64 rounding
        assert float((y - x).abs().max()) < 1e-10
    # no state kept between encode and decode: a second batch in flight changes nothing
    codec.encode(torch.rand(batch, channels, hk * f, wk * f, generator=g, dtype=torch.float64))
    assert torch.equal(codec.decode(latent), y)
    # per-sample: decoding a subset of rows equals the rows of the full decode
    rows = torch.tensor([batch - 1])
    assert torch.allclose(codec.decode(latent.select(rows)), y[rows], atol=1e-12)


@FAST
@given(channels=st.integers(1, 4), batch=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12),
       seed=st.integers(0, 2**16))
def test_pixel_codec_is_the_identity(channels: int, batch: int, h: int, w: int, seed: int) -> None:
    codecs = _codecs()
    codec = codecs.PixelCodec(channels=channels)
    x = torch.rand(batch, channels, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    latent = codec.encode(x)
    assert codec.latent_channels(channels) == latent.z.shape[1] and codec.downsample == 1
    assert torch.equal(codec.decode(latent), x)


@FAST
@given(multiple=st.sampled_from([1, 2, 4, 8]), h=st.integers(1, 40), w=st.integers(1, 40))
def test_pad_to_reaches_the_multiple_and_masks_the_padding(multiple: int, h: int, w: int) -> None:
    codecs = _codecs()
    x = torch.rand(1, 1, h, w)
    padded, mask = codecs.pad_to(x, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert padded.shape[-2] - h < multiple and padded.shape[-1] - w < multiple
    assert torch.equal(padded[..., :h, :w], x)
    assert float(mask.sum()) == h * w and torch.equal(mask[..., :h, :w], torch.ones(1, 1, h, w))


# --------------------------------------------------------------------------- gates


@FAST
@given(t_max=st.floats(0.01, 20.0), t=times)
def test_hard_gate(t_max: float, t: list[float]) -> None:
    got = HardGate(t_max)(torch.tensor(t, dtype=torch.float64)).tolist()
    assert got == [1.0 if v <= t_max else 0.0 for v in t]
    assert HardGate(t_max).max_over(min(t), max(t)) >= max(got)


@FAST
@given(t_max=st.floats(0.01, 20.0), t=times)
def test_linear_gate_bounded_and_non_increasing(t_max: float, t: list[float]) -> None:
    ts = sorted(t)
    got = LinearGate(t_max)(torch.tensor(ts, dtype=torch.float64)).tolist()
    expected = [min(1.0, max(0.0, (t_max - v) / t_max)) for v in ts]
    assert np.allclose(got, expected, atol=1e-12)
    assert all(0.0 <= g <= 1.0 for g in got)
    assert all(a >= b for a, b in zip(got, got[1:], strict=False))  # non-increasing in t
    assert LinearGate(t_max).max_over(ts[0], ts[-1]) == pytest.approx(got[0], abs=1e-12)


@FAST
@given(edges=st.lists(st.floats(0.0, 15.0), min_size=0, max_size=4, unique=True),
       values=st.lists(weights, min_size=5, max_size=5), t=times)
def test_bins_gate_matches_bisect(edges: list[float], values: list[float], t: list[float]) -> None:
    edges = sorted(edges)
    values = values[: len(edges) + 1]
    gate = BinsGate(edges, values)
    got = gate(torch.tensor(t, dtype=torch.float64)).tolist()
    assert got == [values[bisect.bisect_right(edges, v)] for v in t]  # edges[i-1] <= t < edges[i]
    assert all(min(values) <= g <= max(values) for g in got)
    assert gate.max_over(min(t), max(t)) >= max(got)
    assert gate.max_over(-1e9, 1e9) == max(values)


@FAST
@given(t=times)
def test_no_gate_is_one(t: list[float]) -> None:
    assert NoGate()(torch.tensor(t)).tolist() == [1.0] * len(t)


# --------------------------------------------------------------------------- schedules

steps_st = st.integers(0, 300)


def _brute_max(schedule: object, total: int) -> float:
    return max(schedule(s) for s in range(total + 1))  # type: ignore[operator]


@FAST
@given(start=weights, end=weights, begin=st.integers(0, 100), span=st.integers(1, 100), total=steps_st)
def test_linear_schedule(start: float, end: float, begin: int, span: int, total: int) -> None:
    sched = Linear(start, end, begin, span)
    values = [sched(s) for s in range(0, begin + span + 20)]
    lo, hi = min(start, end), max(start, end)
    assert all(lo - 1e-12 <= v <= hi + 1e-12 for v in values)
    assert sched(begin) == pytest.approx(start) and sched(begin + span) == pytest.approx(end)
    sign = 1 if end >= start else -1
    assert all(sign * (b - a) >= -1e-12 for a, b in zip(values, values[1:], strict=False))  # monotone
    assert sched.max_until(total) == pytest.approx(_brute_max(sched, total))


@FAST
@given(value=weights, warmup=st.integers(0, 100), extra=st.integers(0, 100), total=steps_st)
def test_ramp_schedule(value: float, warmup: int, extra: int, total: int) -> None:
    sched = Ramp(value, warmup, warmup + extra)
    values = [sched(s) for s in range(0, warmup + extra + 20)]
    assert all(sched(s) == 0.0 for s in range(warmup))
    assert all(v == value for v in values[warmup + extra :])
    assert all(0.0 <= v <= value + 1e-12 for v in values)
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))  # non-decreasing
    assert sched.max_until(total) == pytest.approx(_brute_max(sched, total))


@FAST
@given(knots=st.lists(st.tuples(st.integers(0, 200), weights), min_size=1, max_size=6), total=steps_st)
def test_stages_schedule(knots: list[tuple[int, float]], total: int) -> None:
    knots = sorted(knots, key=lambda k: k[0])
    sched = Stages(knots)
    vals = [v for _, v in knots]
    for s in range(0, 220):
        assert min(vals) - 1e-12 <= sched(s) <= max(vals) + 1e-12
    for step in {s for s, _ in knots}:  # at a knot: the value of the last knot at that step
        assert sched(step) == pytest.approx([v for s, v in knots if s == step][-1])
    assert sched(knots[-1][0] + 50) == pytest.approx(knots[-1][1])
    assert sched.max_until(total) == pytest.approx(_brute_max(sched, total))


@FAST
@given(value=weights, step=steps_st)
def test_constant_and_adaptive_base(value: float, step: int) -> None:
    assert Constant(value)(step) == value
    assert Adaptive(Ramp(value, 10, 20))(step) == Ramp(value, 10, 20)(step)


# --------------------------------------------------------------------------- trainer helpers


@FAST
@given(n=st.integers(1, 9), batch=st.integers(1, 5), seed=st.integers(0, 1000), steps=st.integers(1, 12))
def test_batch_stream_visits_every_item_once_per_epoch(n: int, batch: int, seed: int, steps: int) -> None:
    from diffsr.train.trainer import BatchStream

    class Items:
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> int:
            return i

    stream = BatchStream(Items(), batch, seed)
    seen = [x for s in range(steps) for x in stream.items(s, 0, batch)]
    for e in range(len(seen) // n):  # each complete epoch is a permutation of the items
        assert sorted(seen[e * n : (e + 1) * n]) == list(range(n))
    # any rank's slice is the same as the global batch's slice (how processes share a batch)
    again = BatchStream(Items(), batch, seed)
    for s in range(steps):
        half = batch // 2
        assert again.items(s, half, batch) == stream.items(s, 0, batch)[half:]


@FAST
@given(seed=st.integers(0, 10**6), step=st.integers(0, 10**6))
def test_step_generator_is_a_function_of_seed_and_step(seed: int, step: int) -> None:
    from diffsr.train.trainer import step_generator

    cpu = torch.device("cpu")
    a = torch.rand(4, generator=step_generator(seed, step, cpu))
    assert torch.equal(a, torch.rand(4, generator=step_generator(seed, step, cpu)))
    assert not torch.equal(a, torch.rand(4, generator=step_generator(seed, step + 1, cpu)))


@FAST
@given(total=st.integers(1, 500), warmup=st.integers(0, 50), floor=st.floats(0.0, 1.0),
       kind=st.sampled_from(["cosine", "constant"]))
def test_lr_schedule_bounded_and_decaying(total: int, warmup: int, floor: float, kind: str) -> None:
    from diffsr.config import Config
    from diffsr.train.trainer import lr_lambda

    cfg = Config.model_validate({"train": {"steps": total, "warmup_steps": warmup, "min_lr_ratio": floor,
                                           "lr_schedule": kind}})
    f = lr_lambda(cfg)
    after = [f(s) for s in range(warmup, total + 1)]
    assert all(floor - 1e-12 <= v <= 1.0 + 1e-12 for v in after)
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:], strict=False))  # never rises after warm-up
    assert all(0 < f(s) <= 1.0 for s in range(warmup))
    if kind == "cosine" and total > warmup:
        assert f(total) == pytest.approx(floor) and f(warmup) == pytest.approx(1.0)
    assert math.isfinite(f(10 * total))
