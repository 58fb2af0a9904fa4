"""Timestep gates: how much of a loss term each sample gets, as a function of its t.

A gate maps the process's own timesteps ``t`` (B,) to per-sample factors (B,) in [0, inf).
Units are the process's (rectified flow t in [0, 1]; DDPM / ResShift integer steps in
[0, T-1] stored as floats), so a gate written for one process is wrong for another; the
audit (:func:`diffsr.train.audit.audit_config`) checks that a gate can open inside the
process's t range.

- :class:`NoGate`: ``g(t) = 1``
- :class:`HardGate`: ``g(t) = 1 if t <= t_max else 0``
- :class:`LinearGate`: ``g(t) = clamp((t_max - t) / t_max, 0, 1)`` (seed 000: 1 at t = 0,
  0 from t_max on)
- :class:`BinsGate`: the value of the bin holding t; bin i is ``edges[i-1] <= t < edges[i]``
  (ResShift T = 15: edges [5, 10], values [1.0, 0.1, 0.001])
- :class:`SamplerGate`: 1 at the times the sampler visits (``steps`` sampling steps, 1 = the
  faithful one-step output), else 0: the fidelity term trains exactly the timesteps that make
  the output. Built with the process (``build_gate(cfg, process=...)``).

Gates are not trained and carry no gradient (``t`` is detached).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from diffsr.core.registry import Registry
from diffsr.core.schema import Strict

__all__ = [
    "GATES",
    "SamplerGate",
    "SamplerGateConfig",
    "BinsGate",
    "BinsGateConfig",
    "Gate",
    "HardGate",
    "HardGateConfig",
    "LinearGate",
    "LinearGateConfig",
    "NoGate",
    "NoGateConfig",
    "build_gate",
]

#: timestep gates by ``kind``; each registers its config model (``kind`` + its own fields)
GATES: Registry[Gate] = Registry("gate", tag="kind")


def _as_float(t: Tensor) -> Tensor:
    t = t.detach()
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


class Gate:
    """Base class: ``gate(t) -> (B,)`` factors in [0, inf)."""

    kind: str = "gate"

    def __call__(self, t: Tensor) -> Tensor:
        """Per-sample factors (B,) for timesteps ``t`` (B,), in ``t``'s float dtype."""
        raise NotImplementedError

    def max_over(self, t_lo: float, t_hi: float) -> float:
        """The largest factor reachable for some t in [t_lo, t_hi] (0: the gate never opens)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable formula."""
        return self.kind

    def check_units(self, t_lo: float, t_hi: float) -> str | None:
        """Why this gate looks written in another process's t units, or None (used by the audit)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class NoGateConfig(Strict):
    """g(t) = 1 for every t."""

    kind: Literal["none"] = "none"


class HardGateConfig(Strict):
    """g(t) = 1 if t <= t_max else 0."""

    kind: Literal["hard"] = "hard"
    t_max: float = Field(gt=0)


class LinearGateConfig(Strict):
    """g(t) = clamp((t_max - t) / t_max, 0, 1) (seed 000)."""

    kind: Literal["linear"] = "linear"
    t_max: float = Field(gt=0)


class BinsGateConfig(Strict):
    """The value of the bin holding t; ``edges`` ascending, ``values`` has len(edges) + 1
    (ResShift T=15: edges [5, 10], values [1.0, 0.1, 0.001])."""

    kind: Literal["bins"] = "bins"
    edges: list[float] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> BinsGateConfig:
        if len(self.values) != len(self.edges) + 1:
            raise ValueError("bins gate needs len(values) == len(edges) + 1")
        if self.edges != sorted(self.edges):
            raise ValueError("bins gate edges must be ascending")
        if any(v < 0 for v in self.values):
            raise ValueError("bins gate values must be >= 0")
        return self


def _check_t_max(gate: HardGate | LinearGate, t_lo: float, t_hi: float) -> str | None:
    span = f"[{t_lo:g}, {t_hi:g}]"
    if gate.t_max > t_hi:
        return f"gate t_max {gate.t_max:g} lies outside the process's t range {span} (t units of another process?)"
    if t_hi > 1 and gate.t_max < 1:
        return (f"gate t_max {gate.t_max:g} is below one step of the t range {span}: it opens only at t = 0 "
                "(flow units on a step-indexed process?)")
    return None


@GATES.register("none", config=NoGateConfig)
class NoGate(Gate):
    """Every sample, every t: g(t) = 1."""

    kind = "none"

    def __call__(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_float(t))

    def max_over(self, t_lo: float, t_hi: float) -> float:
        return 1.0

    def describe(self) -> str:
        return "1"


@GATES.register("hard", config=HardGateConfig)
class HardGate(Gate):
    """g(t) = 1 if t <= t_max else 0."""

    kind = "hard"

    def __init__(self, t_max: float) -> None:
        if not t_max > 0:
            raise ValueError(f"HardGate: t_max must be > 0, got {t_max}")
        self.t_max = float(t_max)

    def __call__(self, t: Tensor) -> Tensor:
        t = _as_float(t)
        return (t <= self.t_max).to(t.dtype)

    def max_over(self, t_lo: float, t_hi: float) -> float:
        return 1.0 if t_lo <= self.t_max else 0.0

    def describe(self) -> str:
        return f"t <= {self.t_max:g}"

    def check_units(self, t_lo: float, t_hi: float) -> str | None:
        return _check_t_max(self, t_lo, t_hi)


@GATES.register("linear", config=LinearGateConfig)
class LinearGate(Gate):
    """g(t) = clamp((t_max - t) / t_max, 0, 1): 1 at t = 0, falling to 0 at t_max."""

    kind = "linear"

    def __init__(self, t_max: float) -> None:
        if not t_max > 0:
            raise ValueError(f"LinearGate: t_max must be > 0, got {t_max}")
        self.t_max = float(t_max)

    def __call__(self, t: Tensor) -> Tensor:
        t = _as_float(t)
        return ((self.t_max - t) / self.t_max).clamp(0.0, 1.0)

    def max_over(self, t_lo: float, t_hi: float) -> float:
        # non-increasing in t: the maximum sits at the lowest reachable t
        return min(max((self.t_max - t_lo) / self.t_max, 0.0), 1.0)

    def describe(self) -> str:
        return f"clamp(({self.t_max:g} - t) / {self.t_max:g}, 0, 1)"

    def check_units(self, t_lo: float, t_hi: float) -> str | None:
        return _check_t_max(self, t_lo, t_hi)


@GATES.register("bins", config=BinsGateConfig)
class BinsGate(Gate):
    """Piecewise-constant: ``values[i]`` on ``edges[i-1] <= t < edges[i]`` (len(values) = len(edges) + 1)."""

    kind = "bins"

    def __init__(self, edges: Sequence[float], values: Sequence[float]) -> None:
        edges, values = [float(e) for e in edges], [float(v) for v in values]
        if len(values) != len(edges) + 1:
            raise ValueError(
                f"BinsGate: need len(values) == len(edges) + 1, got {len(values)} and {len(edges)}"
            )
        if edges != sorted(edges):
            raise ValueError(f"BinsGate: edges must be ascending, got {edges}")
        if any(v < 0 or not math.isfinite(v) for v in values):
            raise ValueError(f"BinsGate: values must be finite and >= 0, got {values}")
        self.edges, self.values = edges, values

    def __call__(self, t: Tensor) -> Tensor:
        t = _as_float(t)
        edges = torch.tensor(self.edges, dtype=t.dtype, device=t.device)
        values = torch.tensor(self.values, dtype=t.dtype, device=t.device)
        # right=True: index i such that edges[i-1] <= t < edges[i]
        return values[torch.bucketize(t, edges, right=True)]

    def max_over(self, t_lo: float, t_hi: float) -> float:
        lows = [-math.inf, *self.edges]
        highs = [*self.edges, math.inf]
        bins = zip(self.values, lows, highs, strict=True)
        reachable = [v for v, lo, hi in bins if t_lo < hi and t_hi >= lo]
        return max(reachable, default=0.0)

    def describe(self) -> str:
        return f"bins edges={self.edges} values={self.values}"

    def check_units(self, t_lo: float, t_hi: float) -> str | None:
        outside = [e for e in self.edges if e < t_lo or e > t_hi]
        if outside:
            return f"bins gate edge(s) {outside} lie outside the process's t range [{t_lo:g}, {t_hi:g}]"
        return None


class SamplerGateConfig(Strict):
    """1 at the times a ``steps``-step sampler evaluates the denoiser (1: the faithful one-step
    output), within ``width`` in the process's t units; 0 elsewhere."""

    kind: Literal["sampler"] = "sampler"
    steps: int = Field(1, ge=1)
    width: float = Field(0.0, ge=0)


class SamplerGate(Gate):
    """g(t) = 1 where t is one of ``times`` (within ``width``, at least 1e-4 relative), else 0.

    The times are the process's sampling schedule: the fidelity terms then act exactly on the
    timesteps the sampler uses to make its output (for the one-step sampler: the start time
    t = T - 1 of ResShift / DDPM / RDDM, t = 1 of rectified flow, whose training times are
    clamped to 1 - 1e-5).
    """

    kind = "sampler"

    def __init__(self, times: Sequence[float], width: float = 0.0) -> None:
        if not times:
            raise ValueError("SamplerGate: needs the sampler's times")
        self.times, self.width = [float(t) for t in times], float(width)

    def _tolerance(self, t: float) -> float:
        return max(self.width, 1e-4 * max(1.0, abs(t)))

    def __call__(self, t: Tensor) -> Tensor:
        t = _as_float(t)
        hit = torch.zeros_like(t, dtype=torch.bool)
        for time in self.times:
            hit |= (t - time).abs() <= self._tolerance(time)
        return hit.to(t.dtype)

    def max_over(self, t_lo: float, t_hi: float) -> float:
        reach = [t for t in self.times if t_lo - self._tolerance(t) <= t <= t_hi + self._tolerance(t)]
        return 1.0 if reach else 0.0

    def describe(self) -> str:
        return f"t in sampler times {self.times}" + (f" +- {self.width:g}" if self.width else "")


def _sampler_gate(cfg: SamplerGateConfig, *, process: Any = None, **_: Any) -> SamplerGate:
    if process is None:
        raise ValueError("gate 'sampler' needs the process (build_gate(cfg, process=...))")
    return SamplerGate(process.sample_schedule(cfg.steps), cfg.width)


GATES.register("sampler", config=SamplerGateConfig, build=_sampler_gate)(SamplerGate)


def build_gate(cfg: Any, *, process: Any = None) -> Gate:
    """The :class:`Gate` for a registered gate's config model (None: no gate; a Gate: itself).

    process: the diffusion process (a ``sampler`` gate reads its sampling schedule).
    """
    if cfg is None:
        return NoGate()
    if isinstance(cfg, Gate):
        return cfg
    # a gate with its own builder gets the process (the sampler gate); a plain class its fields only
    context = {"process": process} if GATES.entry(cfg.kind).build is not None else {}
    return GATES.build_from(cfg, **context)
