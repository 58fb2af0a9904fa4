"""Weight schedules over optimiser steps, in float64 (plain Python floats).

``schedule(step) -> float`` is the term's weight at optimiser step ``step`` (0-based);
``schedule.max_until(total_steps)`` is the largest weight reached for any integer step in
[0, total_steps], which the audit uses to catch a term that never switches on.

- :class:`Constant`: ``w = value``
- :class:`Linear`: ``start`` until ``begin``, linear to ``end`` at ``begin + steps``, then ``end``
- :class:`Ramp`: 0 until ``warmup``, linear to ``value`` at ``ramp_end``, then ``value``
  (``ramp_end == warmup``: a jump)
- :class:`Stages`: piecewise linear through knots ``(step, value)``, constant outside; two
  knots at the same step make a jump (the later knot holds from that step on)
- :class:`Adaptive`: ``base(step)`` times a gradient-norm ratio the loss stack computes
  (VQGAN, Esser et al. 2021): ``||grad L_ref|| / (||grad L_term|| + eps)`` at the last
  layer, clamped to [0, max_ratio] and detached
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from diffsr.core.registry import Registry
from diffsr.core.schema import Strict

__all__ = [
    "SCHEDULES",
    "Adaptive",
    "AdaptiveSchedule",
    "Constant",
    "ConstantSchedule",
    "Linear",
    "LinearSchedule",
    "Ramp",
    "RampSchedule",
    "Schedule",
    "ScheduleConfig",
    "Stage",
    "Stages",
    "StagesSchedule",
    "build_schedule",
]

#: weight schedules by ``kind``; capability ``adaptive``: the stack multiplies the weight by a
#: gradient-norm ratio (an adaptive schedule cannot be the base of another one)
SCHEDULES: Registry[Schedule] = Registry("weight schedule", tag="kind", capabilities={"adaptive": False})


class Schedule:
    """Base class: a weight as a function of the optimiser step."""

    #: True for :class:`Adaptive` (the stack multiplies by a gradient-norm ratio)
    adaptive: bool = False

    def __call__(self, step: int) -> float:
        """The weight at ``step``."""
        raise NotImplementedError

    def breakpoints(self) -> list[int]:
        """Steps where the piecewise-linear weight changes slope or jumps."""
        return []

    def max_until(self, total_steps: int) -> float:
        """The largest weight at any integer step in [0, total_steps]."""
        total_steps = max(int(total_steps), 0)
        # piecewise linear between integer breakpoints: the maximum of each piece lies at its
        # first step or at the step just before the next breakpoint (a jump may follow it)
        candidates = {0, total_steps}
        for b in self.breakpoints():
            candidates.update(s for s in (b - 1, b) if 0 <= s <= total_steps)
        return max(self(s) for s in candidates)

    def describe(self) -> str:
        """A short human-readable formula."""
        return type(self).__name__.lower()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def _lerp(a: float, b: float, frac: float) -> float:
    return a + (b - a) * frac


class ConstantSchedule(Strict):
    """w(step) = value."""

    kind: Literal["constant"] = "constant"
    value: float = Field(1.0, ge=0)


@SCHEDULES.register("constant", config=ConstantSchedule)
class Constant(Schedule):
    """w(step) = value."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(value)

    def __call__(self, step: int) -> float:
        return self.value

    def describe(self) -> str:
        return f"{self.value:g}"


class LinearSchedule(Strict):
    """start until ``begin``, then linear to ``end`` at ``begin + steps``, then ``end``."""

    kind: Literal["linear"] = "linear"
    start: float = Field(0.0, ge=0)
    end: float = Field(1.0, ge=0)
    begin: int = Field(0, ge=0)
    steps: int = Field(1000, gt=0)


@SCHEDULES.register("linear", config=LinearSchedule)
class Linear(Schedule):
    """``start`` until ``begin``, linear to ``end`` at ``begin + steps``, then ``end``."""

    def __init__(self, start: float = 0.0, end: float = 1.0, begin: int = 0, steps: int = 1000) -> None:
        if steps <= 0:
            raise ValueError(f"Linear: steps must be > 0, got {steps}")
        self.start, self.end = float(start), float(end)
        self.begin, self.steps = int(begin), int(steps)

    def __call__(self, step: int) -> float:
        frac = min(max((step - self.begin) / self.steps, 0.0), 1.0)
        return _lerp(self.start, self.end, frac)

    def breakpoints(self) -> list[int]:
        return [self.begin, self.begin + self.steps]

    def describe(self) -> str:
        return f"{self.start:g} -> {self.end:g} over [{self.begin}, {self.begin + self.steps}]"


class RampSchedule(Strict):
    """0 until ``warmup``, linear ramp to ``value`` at ``ramp_end``, then ``value``."""

    kind: Literal["ramp"] = "ramp"
    value: float = Field(1.0, ge=0)
    warmup: int = Field(0, ge=0)
    ramp_end: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> RampSchedule:
        if self.ramp_end < self.warmup:
            raise ValueError("ramp_end must be >= warmup")
        return self


@SCHEDULES.register("ramp", config=RampSchedule)
class Ramp(Schedule):
    """0 until ``warmup``, linear to ``value`` at ``ramp_end``, then ``value``."""

    def __init__(self, value: float = 1.0, warmup: int = 0, ramp_end: int = 0) -> None:
        if ramp_end < warmup:
            raise ValueError(f"Ramp: ramp_end ({ramp_end}) must be >= warmup ({warmup})")
        self.value, self.warmup, self.ramp_end = float(value), int(warmup), int(ramp_end)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return 0.0
        if step >= self.ramp_end:
            return self.value
        return self.value * (step - self.warmup) / (self.ramp_end - self.warmup)

    def breakpoints(self) -> list[int]:
        return [self.warmup, self.ramp_end]

    def describe(self) -> str:
        return f"0 until {self.warmup}, -> {self.value:g} at {self.ramp_end}"


class Stage(Strict):
    """One knot of a piecewise schedule: the weight at ``step`` (linear between knots)."""

    step: int = Field(ge=0)
    value: float = Field(ge=0)


class StagesSchedule(Strict):
    """Piecewise-linear through knots; constant before the first and after the last.

    A knot pair with the same step makes a jump (e.g. stages switching on at 3000).
    """

    kind: Literal["stages"] = "stages"
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _sorted(self) -> StagesSchedule:
        steps = [s.step for s in self.stages]
        if steps != sorted(steps):
            raise ValueError("stages must be sorted by step")
        return self


def _stages_from(cfg: StagesSchedule, **_: Any) -> Stages:
    return Stages([(s.step, s.value) for s in cfg.stages])


@SCHEDULES.register("stages", config=StagesSchedule, build=_stages_from)
class Stages(Schedule):
    """Piecewise linear through ``(step, value)`` knots; equal steps make a jump."""

    def __init__(self, knots: Sequence[tuple[int, float]]) -> None:
        knots = [(int(s), float(v)) for s, v in knots]
        if not knots:
            raise ValueError("Stages: need at least one knot")
        if [s for s, _ in knots] != sorted(s for s, _ in knots):
            raise ValueError(f"Stages: knots must be sorted by step, got {knots}")
        self.knots = knots

    def __call__(self, step: int) -> float:
        knots = self.knots
        if step < knots[0][0]:
            return knots[0][1]
        # the last knot at or before ``step`` (so of two knots at one step, the later wins)
        i = max(k for k, (s, _) in enumerate(knots) if s <= step)
        if i == len(knots) - 1:
            return knots[i][1]
        (s0, v0), (s1, v1) = knots[i], knots[i + 1]
        return _lerp(v0, v1, (step - s0) / (s1 - s0))

    def breakpoints(self) -> list[int]:
        return [s for s, _ in self.knots]

    def describe(self) -> str:
        return " ".join(f"{s}:{v:g}" for s, v in self.knots)


class AdaptiveSchedule(Strict):
    """VQGAN-style: w = base(step) * ||grad L_rec|| / (||grad L_term|| + eps) at the last layer.

    ``base`` is itself a (non-adaptive) schedule (warm-up, ramp); the ratio is clamped to
    [0, max_ratio] and detached. ``diffsr.config`` widens ``base`` to every registered
    non-adaptive schedule.
    """

    kind: Literal["adaptive"] = "adaptive"
    base: ConstantSchedule | LinearSchedule | RampSchedule | StagesSchedule = Field(
        default_factory=ConstantSchedule, discriminator="kind"
    )
    max_ratio: float = Field(1e4, gt=0)
    eps: float = Field(1e-4, gt=0)


def _adaptive_from(cfg: AdaptiveSchedule, **_: Any) -> Adaptive:
    return Adaptive(build_schedule(cfg.base), cfg.max_ratio, cfg.eps)


@SCHEDULES.register("adaptive", config=AdaptiveSchedule, build=_adaptive_from, adaptive=True)
class Adaptive(Schedule):
    """``base(step)``; the stack multiplies by the clamped, detached gradient-norm ratio."""

    adaptive = True

    def __init__(self, base: Schedule | None = None, max_ratio: float = 1e4, eps: float = 1e-4) -> None:
        self.base = base if base is not None else Constant(1.0)
        self.max_ratio, self.eps = float(max_ratio), float(eps)

    def __call__(self, step: int) -> float:
        return self.base(step)

    def breakpoints(self) -> list[int]:
        return self.base.breakpoints()

    def describe(self) -> str:
        return f"adaptive x ({self.base.describe()}), ratio <= {self.max_ratio:g}"


#: the config of any registered schedule (annotation; ``diffsr.config`` keeps its own union current)
ScheduleConfig = Any


def build_schedule(cfg: Any) -> Schedule:
    """The :class:`Schedule` for a schedule config (a number: constant; None: constant 1).

    Any registered schedule's config model works (``SCHEDULES.build_from``); a
    :class:`Schedule` is returned as it is.
    """
    if cfg is None:
        return Constant(1.0)
    if isinstance(cfg, Schedule):
        return cfg
    if isinstance(cfg, int | float):
        return Constant(float(cfg))
    if not hasattr(cfg, "kind"):
        raise TypeError(f"build_schedule: unsupported {type(cfg).__name__}")
    return SCHEDULES.build_from(cfg)
