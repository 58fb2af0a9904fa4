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

Gates are not trained and carry no gradient (``t`` is detached).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from diffsr.config import GateConfig

__all__ = ["BinsGate", "Gate", "HardGate", "LinearGate", "NoGate", "build_gate"]


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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class NoGate(Gate):
    """Every sample, every t: g(t) = 1."""

    kind = "none"

    def __call__(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_float(t))

    def max_over(self, t_lo: float, t_hi: float) -> float:
        return 1.0

    def describe(self) -> str:
        return "1"


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


def build_gate(cfg: GateConfig | None) -> Gate:
    """The :class:`Gate` for a :class:`~diffsr.config.GateConfig` (None: no gate)."""
    if cfg is None or cfg.kind == "none":
        return NoGate()
    if cfg.kind == "hard":
        return HardGate(cfg.t_max)  # type: ignore[arg-type]
    if cfg.kind == "linear":
        return LinearGate(cfg.t_max)  # type: ignore[arg-type]
    if cfg.kind == "bins":
        return BinsGate(cfg.edges, cfg.values)
    raise ValueError(f"unknown gate kind {cfg.kind!r}")
