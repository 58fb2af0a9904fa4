"""What the loss stack did on one step: per-term raw and weighted values, weights, activity.

The stack builds a report from *detached* tensors after the total is formed and converts
them to Python floats only when a value is first read (one device sync for the whole
report), so a report that is never looked at costs nothing and nothing in the gradient
path calls ``.item()``.

Per term (``TermReport``):

- ``raw``: mean per-sample loss over the rows where the term was active (0 if none)
- ``weighted``: its contribution to the total, ``sum_i factor_i * loss_i / B``
- ``weight``: the schedule weight at this step (times the adaptive ratio, if any)
- ``active_fraction``: the fraction of the batch with a non-zero factor
- ``skipped``: True when the value was NaN/Inf and the term was dropped this step
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from diffsr.core.errors import DiffsrError

__all__ = ["DeadTermError", "LossReport", "NonFiniteError", "ScalarWriter", "TermReport", "log_report"]


class NonFiniteError(DiffsrError):
    """Training produced NaN/Inf losses (policy 'stop', or too many consecutive bad steps)."""


class DeadTermError(DiffsrError):
    """A loss term was active for many steps but contributed exactly 0 every time."""


@dataclass
class TermReport:
    """One term on one step (floats)."""

    raw: float
    weighted: float
    weight: float
    active_fraction: float
    skipped: bool = False


class LossReport:
    """The whole stack on one step.

    ``terms`` maps each term's key (``"diffusion"`` first when given) to a :class:`TermReport`.
    Build it from floats, or lazily with :meth:`from_tensors`.
    """

    def __init__(
        self,
        terms: dict[str, TermReport] | None = None,
        total: float = 0.0,
        decode_calls: int = 0,
        decoded_rows: int = 0,
        skip_step: bool = False,
        nonfinite: int = 0,
    ) -> None:
        self._terms = terms if terms is not None else {}
        self._total = float(total)
        self._pending: tuple[list[str], Tensor, Tensor, list[bool]] | None = None
        self.decode_calls = decode_calls
        self.decoded_rows = decoded_rows
        self.skip_step = skip_step
        self.nonfinite = nonfinite

    @classmethod
    def from_tensors(
        cls,
        keys: list[str],
        values: Tensor,
        total: Tensor,
        skipped: list[bool],
        **fields: Any,
    ) -> LossReport:
        """A report whose floats are read from ``values`` (len(keys), 4) on first access.

        Columns: raw, weighted, weight, active_fraction. Tensors must already be detached.
        """
        report = cls(**fields)
        report._pending = (keys, values, total, skipped)
        return report

    def _materialise(self) -> None:
        if self._pending is None:
            return
        keys, values, total, skipped = self._pending
        self._pending = None
        # one device-to-host copy for the whole report
        flat = torch.cat([values.reshape(-1).to(total.dtype), total.reshape(1)]).double().cpu().tolist()
        self._total = flat[-1]
        rows = [flat[4 * i : 4 * i + 4] for i in range(len(keys))]
        self._terms = {
            k: TermReport(raw=r[0], weighted=r[1], weight=r[2], active_fraction=r[3], skipped=s)
            for k, r, s in zip(keys, rows, skipped, strict=True)
        }

    @property
    def terms(self) -> dict[str, TermReport]:
        """Per-term values (floats)."""
        self._materialise()
        return self._terms

    @property
    def total(self) -> float:
        """The total loss (float)."""
        self._materialise()
        return self._total

    def summary(self, max_terms: int = 4) -> str:
        """A short line for a progress bar: the total and the largest contributions."""
        terms = self.terms

        def size(item: tuple[str, TermReport]) -> float:
            value = abs(item[1].weighted)
            return value if math.isfinite(value) else -1.0

        ranked = sorted(terms.items(), key=size, reverse=True)
        parts = [f"loss {self.total:.4g}"]
        parts += [f"{k} {r.weighted:.3g}" for k, r in ranked[:max_terms]]
        if self.skip_step:
            parts.append("SKIP")
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (for checkpoints and logs)."""
        return {
            "total": self.total,
            "terms": {k: asdict(r) for k, r in self.terms.items()},
            "decode_calls": self.decode_calls,
            "decoded_rows": self.decoded_rows,
            "skip_step": self.skip_step,
            "nonfinite": self.nonfinite,
        }

    def __repr__(self) -> str:
        return f"LossReport({self.summary(max_terms=len(self.terms))})"


class ScalarWriter(Protocol):
    """Anything with TensorBoard's ``add_scalar(tag, value, step)``."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> Any: ...


def log_report(writer: ScalarWriter, report: LossReport, step: int) -> None:
    """Write the fixed TensorBoard names for every term (weight-0 terms too, so dead ones show)."""
    for term, r in report.terms.items():
        writer.add_scalar(f"loss/{term}/raw", r.raw, step)
        writer.add_scalar(f"loss/{term}/weighted", r.weighted, step)
        writer.add_scalar(f"weight/{term}", r.weight, step)
        writer.add_scalar(f"active/{term}", r.active_fraction, step)
    writer.add_scalar("loss/total", report.total, step)
