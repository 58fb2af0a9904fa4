"""Stage 1 of a loss-stack step: each term's factors and the batch rows it needs.

For term k and sample i the factor is ``weight_k(step) * gate_k(t_i) * [paired_i or not
paired_only_k]``; a term is active on the rows where it is > 0. The stack decodes, once, the
union of the rows where a pixel-space term is active and the rows a GAN term's discriminator
learns from (its gate-open rows, whatever its weight). Nothing here computes a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from diffsr.losses.term import LossTerm

__all__ = ["StepPlan", "is_gan", "plan_step"]


def is_gan(term: LossTerm) -> bool:
    """A pixel-space term that trains its own discriminator (``discriminator_step``)."""
    return term.space == "pixel" and hasattr(term.module, "discriminator_step")


@dataclass
class StepPlan:
    """What each term needs on one step, decided before anything is computed.

    weights: each term's schedule weight at this step. gates: its gate(t) * pairing (B,), without
    the weight. factors: weight * gate (B,). active: (terms, B) bool on the CPU, factor > 0.
    gan_rows: GAN term index -> (B,) bool, the rows its discriminator learns from. pixel_rows:
    (B,) bool, the rows to decode. paired: (B,) bool on the CPU, or None.
    """

    weights: list[float]
    gates: list[Tensor]
    factors: list[Tensor]
    active: Tensor
    gan_rows: dict[int, Tensor]
    pixel_rows: Tensor
    paired: Tensor | None


def plan_step(
    terms: Sequence[LossTerm],
    *,
    t: Tensor,
    step: int,
    paired: Tensor | None,
    b: int,
    device: torch.device,
    fdtype: torch.dtype,
) -> StepPlan:
    """The :class:`StepPlan` of ``terms`` for timesteps ``t`` (B,) at ``step`` (one device sync).

    Gates and factors are ``fdtype`` tensors on ``device``; the row masks are on the CPU.
    """
    weights: list[float] = []
    gates: list[Tensor] = []  # gate(t) * pairing, without the schedule weight
    factors: list[Tensor] = []
    t_dev = t.detach().to(device)
    for term in terms:
        w = float(term.weight(step))
        gate = term.gate(t_dev).to(fdtype)  # type: ignore[misc]
        if term.paired_only and paired is not None:
            gate = gate * paired.to(device=device, dtype=fdtype)
        weights.append(w)
        gates.append(gate)
        factors.append(w * gate)
    # a GAN term's discriminator learns on every row its gate (and pairing) opens, even while
    # the generator-side weight is 0 (its warm-up): those rows are decoded too
    gan = [k for k, term in enumerate(terms) if is_gan(term)]
    nt = len(terms)
    rows_plan = factors + [gates[k] for k in gan]
    plan = torch.stack(rows_plan).gt(0).cpu() if rows_plan else torch.zeros(0, b, dtype=torch.bool)
    active = plan[:nt]
    gan_rows = {k: plan[nt + i] for i, k in enumerate(gan)}
    pixel_rows = torch.zeros(b, dtype=torch.bool)
    for k, term in enumerate(terms):
        if term.space == "pixel":
            pixel_rows |= active[k]
    for rows_k in gan_rows.values():
        pixel_rows |= rows_k
    paired_cpu = paired.detach().to("cpu", torch.bool) if paired is not None else None
    return StepPlan(weights, gates, factors, active, gan_rows, pixel_rows, paired_cpu)
