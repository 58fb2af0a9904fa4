"""Weight schedules against hand-computed values (DESIGN §3, seeds 000/003/004)."""

from __future__ import annotations

import pytest

from diffsr.config import (
    AdaptiveSchedule,
    ConstantSchedule,
    LinearSchedule,
    RampSchedule,
    StagesSchedule,
)
from diffsr.losses import (
    Adaptive,
    Constant,
    Linear,
    Ramp,
    Stages,
    build_schedule,
)


def test_constant_and_linear() -> None:
    assert Constant(0.05)(0) == 0.05 and Constant(0.05)(10**6) == 0.05
    # seed 004: LPIPS weight 0.01 -> 0.15 linearly over 1000 steps
    lin = Linear(0.01, 0.15, begin=0, steps=1000)
    assert lin(0) == pytest.approx(0.01)
    assert lin(250) == pytest.approx(0.01 + 0.14 * 0.25)
    assert lin(500) == pytest.approx(0.08)
    assert lin(1000) == pytest.approx(0.15) and lin(5000) == pytest.approx(0.15)
    late = Linear(1.0, 3.0, begin=100, steps=10)
    assert late(0) == 1.0 and late(100) == 1.0 and late(105) == pytest.approx(2.0) and late(110) == 3.0


def test_ramp() -> None:
    ramp = Ramp(0.35, warmup=3000, ramp_end=9000)
    assert ramp(0) == 0.0 and ramp(2999) == 0.0 and ramp(3000) == 0.0
    assert ramp(6000) == pytest.approx(0.175)
    assert ramp(7500) == pytest.approx(0.35 * 0.75)
    assert ramp(9000) == pytest.approx(0.35) and ramp(50000) == pytest.approx(0.35)
    jump = Ramp(2.0, warmup=10, ramp_end=10)
    assert jump(9) == 0.0 and jump(10) == 2.0


def test_ditsr_staged_table() -> None:
    """Seed 003: LPIPS 0 until 3k, ramp to 0.35 at 9k; GAN 0 until 9k, 0 -> 0.03 over 4k."""
    lpips = Stages([(0, 0.0), (3000, 0.0), (9000, 0.35)])
    gan = Stages([(0, 0.0), (9000, 0.0), (13000, 0.03)])
    edge = Stages([(3000, 0.0), (9000, 0.06)])
    for step in (0, 1500, 3000):
        assert lpips(step) == 0.0 and gan(step) == 0.0 and edge(step) == 0.0
    assert lpips(6000) == pytest.approx(0.175)
    assert edge(6000) == pytest.approx(0.03)
    assert lpips(9000) == pytest.approx(0.35) and lpips(20000) == pytest.approx(0.35)
    assert gan(9000) == 0.0
    assert gan(11000) == pytest.approx(0.015)
    assert gan(13000) == pytest.approx(0.03) and gan(10**6) == pytest.approx(0.03)


def test_stages_equal_steps_jump() -> None:
    s = Stages([(0, 0.0), (3000, 0.0), (3000, 1.0), (4000, 1.0), (4000, 0.5)])
    assert s(2999) == 0.0
    assert s(3000) == 1.0
    assert s(3999) == 1.0
    assert s(4000) == 0.5 and s(9999) == 0.5
    # before the first knot: the first value
    assert Stages([(100, 0.7), (200, 0.9)])(0) == 0.7


def test_max_until() -> None:
    ramp = Ramp(0.35, warmup=3000, ramp_end=9000)
    assert ramp.max_until(1000) == 0.0
    assert ramp.max_until(3000) == 0.0
    assert ramp.max_until(6000) == pytest.approx(0.175)
    assert ramp.max_until(10**6) == pytest.approx(0.35)
    # a knot pair that jumps down: the maximum is the value held just before the jump
    down = Stages([(0, 1.0), (100, 1.0), (100, 0.0)])
    assert down.max_until(500) == 1.0
    peak = Stages([(0, 0.0), (50, 2.0), (100, 0.0)])
    assert peak.max_until(25) == pytest.approx(1.0)
    assert peak.max_until(1000) == pytest.approx(2.0)
    assert Linear(1.0, 0.0, begin=10, steps=10).max_until(100) == 1.0
    assert Constant(0.0).max_until(10**6) == 0.0
    assert Stages([(0, 0.0), (9000, 0.0), (13000, 0.03)]).max_until(9000) == 0.0
    assert Adaptive(Ramp(1.0, 500, 600)).max_until(499) == 0.0


def test_build_schedule_from_config() -> None:
    assert build_schedule(ConstantSchedule(value=0.05))(123) == 0.05
    lin = build_schedule(LinearSchedule(start=0.01, end=0.15, begin=0, steps=1000))
    assert lin(500) == pytest.approx(0.08)
    ramp = build_schedule(RampSchedule(value=0.35, warmup=3000, ramp_end=9000))
    assert ramp(6000) == pytest.approx(0.175)
    stages = build_schedule(StagesSchedule(stages=[{"step": 0, "value": 0.0}, {"step": 9000, "value": 0.0},
                                                   {"step": 13000, "value": 0.03}]))
    assert stages(11000) == pytest.approx(0.015)
    base = RampSchedule(value=0.8, warmup=0, ramp_end=10)
    adaptive = build_schedule(AdaptiveSchedule(base=base, max_ratio=5))
    assert isinstance(adaptive, Adaptive) and adaptive.adaptive and adaptive.max_ratio == 5
    assert adaptive(5) == pytest.approx(0.4)
    assert build_schedule(0.25)(7) == 0.25 and build_schedule(None)(7) == 1.0
    assert not Constant(1.0).adaptive
