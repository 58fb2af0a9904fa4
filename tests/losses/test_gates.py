"""Timestep gates against hand-computed values (DESIGN §3, seeds 000/003/004)."""

from __future__ import annotations

import pytest
import torch

from diffsr.config import (
    GateConfig,
)
from diffsr.losses import (
    BinsGate,
    HardGate,
    LinearGate,
    NoGate,
    build_gate,
)


def test_linear_gate_seed_000_values() -> None:
    # w(t) = clamp((0.3 - t) / 0.3, 0, 1): t=0 -> 1, 0.06 -> 0.8, 0.15 -> 0.5, 0.3 -> 0, beyond -> 0
    t = torch.tensor([0.0, 0.06, 0.15, 0.25, 0.3, 0.5, 1.0], dtype=torch.float64)
    expected = torch.tensor([1.0, 0.8, 0.5, 1 / 6, 0.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(LinearGate(0.3)(t), expected, rtol=0, atol=1e-12)


def test_hard_gate_values() -> None:
    t = torch.tensor([0.0, 0.2999, 0.3, 0.3001, 0.9], dtype=torch.float64)
    assert LinearGate(0.3)(t).dtype == torch.float64
    assert HardGate(0.3)(t).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_bins_gate_resshift_t15() -> None:
    gate = BinsGate([5, 10], [1.0, 0.1, 0.001])
    t = torch.arange(15)  # integer steps 0..14, as a step-indexed process draws them
    got = gate(t)
    expected = [1.0] * 5 + [0.1] * 5 + [0.001] * 5  # t<5 -> 1.0, 5<=t<10 -> 0.1, t>=10 -> 0.001
    assert got.is_floating_point()
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    assert gate(torch.tensor([4.999, 5.0, 9.999, 10.0])).tolist() == pytest.approx([1.0, 0.1, 0.1, 0.001])


def test_no_gate_is_one() -> None:
    assert NoGate()(torch.tensor([0.0, 0.5, 999.0])).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("gate", [HardGate(0.3), LinearGate(0.3), LinearGate(300.0), HardGate(500.0)])
def test_hard_and_linear_gates_are_non_increasing(gate) -> None:
    t = torch.linspace(0, 1000, 20001, dtype=torch.float64)
    w = gate(t)
    assert (w.diff() <= 0).all()
    assert w.max() == 1.0 and w.min() >= 0.0


def test_gate_max_over() -> None:
    assert LinearGate(0.3).max_over(0.0, 1.0) == 1.0
    assert LinearGate(0.3).max_over(0.15, 1.0) == pytest.approx(0.5)
    assert LinearGate(0.3).max_over(0.5, 1.0) == 0.0
    assert HardGate(0.3).max_over(0.3, 1.0) == 1.0
    assert HardGate(0.3).max_over(0.31, 1.0) == 0.0
    bins = BinsGate([5, 10], [1.0, 0.1, 0.001])
    assert bins.max_over(0, 14) == 1.0
    assert bins.max_over(6, 14) == 0.1
    assert bins.max_over(10, 14) == 0.001
    assert BinsGate([5], [0.0, 1.0]).max_over(0, 4) == 0.0
    assert NoGate().max_over(3, 4) == 1.0


def test_build_gate_from_config() -> None:
    t = torch.tensor([0.0, 0.15, 0.6], dtype=torch.float64)
    assert isinstance(build_gate(GateConfig()), NoGate)
    assert build_gate(None)(t).tolist() == [1.0, 1.0, 1.0]
    assert build_gate(GateConfig(kind="hard", t_max=0.5))(t).tolist() == [1.0, 1.0, 0.0]
    assert build_gate(GateConfig(kind="linear", t_max=0.3))(t).tolist() == pytest.approx([1.0, 0.5, 0.0])
    bins = build_gate(GateConfig(kind="bins", edges=[0.1, 0.5], values=[1.0, 0.1, 0.001]))
    assert bins(t).tolist() == pytest.approx([1.0, 0.1, 0.001])


def test_bad_gate_arguments() -> None:
    with pytest.raises(ValueError, match="len"):
        BinsGate([5, 10], [1.0, 0.1])
    with pytest.raises(ValueError, match="ascending"):
        BinsGate([10, 5], [1.0, 0.1, 0.0])
    with pytest.raises(ValueError, match="t_max"):
        LinearGate(0.0)
