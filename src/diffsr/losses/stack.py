"""The loss stack: gated, scheduled loss terms sharing one decode per step.

One training step (DESIGN §1)::

    total, report = stack(z0_hat=z0_hat, t=t, step=step, decode=decode, hr=hr, z0=z0,
                          mask=mask, paired=paired, diffusion=diffusion_per_sample)

For every term k and sample i the stack forms a factor

    factor_ki = weight_k(step) * gate_k(t_i) * [paired_i or not paired_only_k]

(times the detached gradient-norm ratio for an adaptive weight). The rows where any
pixel-space term has factor > 0 are decoded **once** (in chunks of ``decode_chunk`` rows if
set) and every pixel-space term reuses that decode; if no row needs pixel space the decoder is
not called. Each term returns a per-sample loss (B_k,) on its own active rows, and contributes

    contribution_k = sum_i factor_ki * loss_ki / B

normalised by the **whole** batch B, not by the active rows: a gated term does not jump when
one more sample passes its gate (the report gives the active fraction instead). The total is
``diffusion_weight * mean(diffusion) + sum_k contribution_k``.

Non-finite values are handled by ``nonfinite_policy`` ("skip_term": drop the term this step;
"skip_step": flag ``report.skip_step`` for the trainer; "stop": raise), and any policy raises
after ``max_consecutive`` consecutive steps with a non-finite term. A term that is active but
contributes exactly 0 for ``dead_after`` consecutive steps raises :class:`DeadTermError` (seed
003: a term defined and weighted but never computed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from diffsr.core.errors import ConfigError
from diffsr.losses.latent import LatentL1Loss, LatentL2Loss, latent_error
from diffsr.losses.latent import _resize_mask as _resize_mask
from diffsr.losses.plan import StepPlan, plan_step
from diffsr.losses.report import DeadTermError, LossReport, NonFiniteError
from diffsr.losses.schedules import Adaptive
from diffsr.losses.term import LossTerm

__all__ = [
    "DeadTermError",
    "Decode",
    "LatentL1Loss",
    "LatentL2Loss",
    "LossStack",
    "LossTerm",
    "NonFiniteError",
    "latent_error",
]  # LossTerm (diffsr.losses.term) and the latent terms (diffsr.losses.latent) are re-exported

logger = logging.getLogger(__name__)

#: decode(z0_hat rows, row indices into the batch (long, on z0_hat's device)) -> x0_hat rows
Decode = Callable[[Tensor, Tensor], Tensor]

NonFinitePolicy = Literal["skip_term", "skip_step", "stop"]


@dataclass
class _Computed:
    """A term's result on one step (tensors still in the graph where they should be)."""

    key: str
    contribution: Tensor | None  # None: inactive this step
    raw: Tensor | None
    weight: Tensor | float
    active_fraction: float
    track_dead: bool = True


@dataclass
class _Decoded:
    """The one shared decode of a step: x0_hat for the batch rows ``rows`` (long, CPU), in order.

    x0_hat is None when no row needed pixel space. position: (B,) long on the CPU, batch row ->
    row of x0_hat (-1: not decoded). calls: decoder calls made (chunks of one logical decode).
    """

    x0_hat: Tensor | None
    rows: Tensor
    position: Tensor
    calls: int


# ----------------------------------------------------------------------------- stack


class LossStack(nn.Module):
    """Gated, scheduled loss terms with one shared decode per step (see the module docstring).

    Term modules are registered submodules (``term_modules[key]``), so ``.to(device)`` and
    ``state_dict()`` include them (a GAN term's discriminator and optimiser state too).
    """

    def __init__(
        self,
        terms: Iterable[LossTerm],
        *,
        decode_chunk: int | None = None,
        nonfinite_policy: NonFinitePolicy = "skip_term",
        max_consecutive: int = 20,
        diffusion_weight: float = 1.0,
        dead_after: int | None = 20,
    ) -> None:
        super().__init__()
        self.terms: list[LossTerm] = list(terms)
        keys = [t.key for t in self.terms]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ConfigError(f"duplicate loss term key(s) {dup}: give each term its own label")
        if nonfinite_policy not in ("skip_term", "skip_step", "stop"):
            raise ConfigError(
                f"nonfinite policy must be skip_term, skip_step or stop, got {nonfinite_policy!r}"
            )
        if decode_chunk is not None and decode_chunk < 1:
            raise ConfigError(f"decode_chunk must be >= 1, got {decode_chunk}")
        self.term_modules = nn.ModuleDict({t.key: t.module for t in self.terms})
        self.decode_chunk = decode_chunk
        self.nonfinite_policy = nonfinite_policy
        self.max_consecutive = int(max_consecutive)
        self.diffusion_weight = float(diffusion_weight)
        self.dead_after = dead_after
        self._bad_steps = 0
        self._streak: tuple[int, set[str]] = (0, set())  # first step and terms of the running bad streak
        self._dead_counts: dict[str, int] = {}
        self._ratios: dict[str, Tensor] = {}
        self._gan_cache: dict[str, tuple[Tensor, Tensor]] = {}
        self._step = 0

    def flush_nonfinite(self) -> None:
        """Warn once about the streak of steps with a NaN/Inf term that just ended, and reset it."""
        if self._bad_steps:
            logger.warning("steps %d-%d: non-finite loss in %s (%d step(s), %s)", self._streak[0],
                           self._streak[0] + self._bad_steps - 1, ", ".join(sorted(self._streak[1])), self._bad_steps,
                           "steps skipped" if self.nonfinite_policy == "skip_step" else "terms dropped")
        self._bad_steps, self._streak = 0, (0, set())

    # ------------------------------------------------------------------ introspection
    @property
    def keys(self) -> list[str]:
        """Term keys in order (without the diffusion term)."""
        return [t.key for t in self.terms]

    @property
    def needs_decoder(self) -> bool:
        """True when some term works in pixel space."""
        return any(t.space == "pixel" for t in self.terms)

    @property
    def dead_counts(self) -> dict[str, int]:
        """Per term: consecutive active steps that contributed exactly 0 (0 for healthy terms)."""
        return dict(self._dead_counts)

    def report_only(self, **inputs: Any) -> LossReport:
        """The report of ``forward(**inputs)`` leaving the training state as it was (validation): NaN/Inf
        is reported, never raised; the counters, the GAN cache and the step are restored afterwards."""
        saved = (self._bad_steps, dict(self._dead_counts), dict(self._gan_cache), self._step, self.nonfinite_policy,
                 self.max_consecutive, self.dead_after)
        self.nonfinite_policy, self.max_consecutive, self.dead_after = "skip_term", 2**62, None
        try:
            return self(**inputs)[1]
        finally:
            (self._bad_steps, self._dead_counts, self._gan_cache, self._step, self.nonfinite_policy,
             self.max_consecutive, self.dead_after) = saved

    def __len__(self) -> int:
        return len(self.terms)

    def extra_repr(self) -> str:
        lines = [f"diffusion_weight={self.diffusion_weight:g}, decode_chunk={self.decode_chunk}"]
        for t in self.terms:
            lines.append(
                f"{t.key}: space={t.space}, weight={t.weight.describe()}, gate={t.gate.describe()}, "
                f"paired_only={t.paired_only}"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ checks
    def _check_inputs(
        self,
        *,
        z0_hat: Tensor,
        t: Tensor | None,
        decode: Decode | None,
        hr: Tensor | None,
        z0: Tensor | None,
        mask: Tensor | None,
        paired: Tensor | None,
        diffusion: Tensor | None,
        last_layer: Tensor | None,
        adaptive: bool,
    ) -> None:
        b = z0_hat.shape[0]
        for term in self.terms:
            if term.space == "pixel" and decode is None:
                raise ConfigError(f"term '{term.key}' needs pixel space but the stack got no decoder")
            if term.space == "pixel" and hr is None:
                raise ValueError(f"term '{term.key}' needs pixel space: pass hr (B, C, H, W)")
            if term.space == "latent" and z0 is None:
                raise ValueError(f"term '{term.key}' works in latent space: pass z0 (B, C, h, w)")
            if adaptive and isinstance(term.weight, Adaptive) and last_layer is None:
                raise ConfigError(
                    f"term '{term.key}' has an adaptive weight but the stack got no last_layer parameter"
                )
        if adaptive and any(isinstance(term.weight, Adaptive) for term in self.terms):
            has_ref = (diffusion is not None and self.diffusion_weight > 0) or any(
                not isinstance(term.weight, Adaptive) for term in self.terms
            )
            if not has_ref:
                raise ConfigError(
                    "an adaptive weight needs a reference term: pass the diffusion loss "
                    "(with diffusion_weight > 0) or add a term with a fixed schedule"
                )
        if t is not None and tuple(t.shape) != (b,):
            raise ValueError(f"t: expected ({b},), got {tuple(t.shape)}")
        if hr is not None and (hr.ndim != 4 or hr.shape[0] != b):
            raise ValueError(f"hr: expected ({b}, C, H, W), got {tuple(hr.shape)}")
        if z0 is not None and z0.shape[0] != b:
            raise ValueError(f"z0: expected batch {b}, got {tuple(z0.shape)}")
        if mask is not None:
            want = f"({b}, 1, {hr.shape[-2]}, {hr.shape[-1]})" if hr is not None else f"({b}, 1, H, W)"
            bad_size = hr is not None and mask.shape[-2:] != hr.shape[-2:]
            if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] != 1 or bad_size:
                raise ValueError(f"mask: expected {want}, got {tuple(mask.shape)}")
        if paired is not None and tuple(paired.shape) != (b,):
            raise ValueError(f"paired: expected ({b},), got {tuple(paired.shape)}")
        if diffusion is not None and tuple(diffusion.shape) != (b,):
            raise ValueError(f"diffusion: expected the per-sample loss ({b},), got {tuple(diffusion.shape)}")

    # ------------------------------------------------------------------ decode
    def _decode(self, decode: Decode, z0_hat: Tensor, index: Tensor, hr: Tensor | None) -> tuple[Tensor, int]:
        """x0_hat for rows ``index`` (one logical decode, maybe chunked); returns (x0_hat, calls)."""
        chunk = self.decode_chunk or index.numel()
        parts = []
        for start in range(0, index.numel(), chunk):
            rows = index[start : start + chunk]
            parts.append(decode(z0_hat[rows], rows))
        x0_hat = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        n = index.numel()
        if x0_hat.ndim != 4 or x0_hat.shape[0] != n:
            raise ValueError(f"decode returned {tuple(x0_hat.shape)} for {n} rows; expected ({n}, C, H, W)")
        if hr is not None and x0_hat.shape[1:] != hr.shape[1:]:
            raise ValueError(
                f"decode returned {tuple(x0_hat.shape)} but hr rows are {(n, *hr.shape[1:])}: "
                "crop or pad the decoded image to the HR size"
            )
        return x0_hat, len(parts)

    # ------------------------------------------------------------------ one term
    def _run_module(
        self, term: LossTerm, pred: Tensor, target: Tensor, mask: Tensor | None, n: int
    ) -> Tensor:
        loss = term.module(pred, target, mask)
        if not isinstance(loss, Tensor) or tuple(loss.shape) != (n,):
            got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"loss term '{term.key}' returned {got}; expected the per-sample loss ({n},)")
        if loss.dtype in (torch.float16, torch.bfloat16):
            loss = loss.float()
        return loss

    def _adaptive_ratio(
        self, term: LossTerm, contribution: Tensor, ref: Tensor | None, last_layer: Tensor
    ) -> Tensor:
        """Detached clamp(||grad ref|| / (||grad term|| + eps), 0, max_ratio) at ``last_layer``.

        ``contribution``: the term's gated, batch-normalised loss without its schedule weight;
        ``ref``: the reference term's contribution to the total (the diffusion term, else the
        first fixed-schedule term).
        """
        sched = term.weight
        assert isinstance(sched, Adaptive)
        cached = self._ratios.get(term.key)
        graph = torch.is_grad_enabled() and contribution.requires_grad
        if ref is None or not graph or not ref.requires_grad:
            # no reference this step or no graph (validation): reuse the last ratio
            return cached if cached is not None else contribution.new_ones(())
        (g_ref,) = torch.autograd.grad(ref, last_layer, retain_graph=True, allow_unused=True)
        (g_term,) = torch.autograd.grad(contribution, last_layer, retain_graph=True, allow_unused=True)
        if g_ref is None or g_term is None:
            # the term (or the reference) does not reach the last layer: give it no weight, so
            # the dead-term check names it rather than a huge ratio hiding the problem
            ratio = contribution.new_zeros(())
        else:
            ratio = g_ref.detach().norm() / (g_term.detach().norm() + sched.eps)
            ratio = ratio.clamp(0.0, sched.max_ratio).to(contribution.dtype)
        self._ratios[term.key] = ratio.detach()
        return ratio.detach()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        *,
        z0_hat: Tensor,
        t: Tensor,
        step: int,
        decode: Decode | None = None,
        hr: Tensor | None = None,
        z0: Tensor | None = None,
        mask: Tensor | None = None,
        paired: Tensor | None = None,
        diffusion: Tensor | None = None,
        last_layer: Tensor | None = None,
    ) -> tuple[Tensor, LossReport]:
        """Total loss (0-dim, in the graph) and a :class:`LossReport` for one training step.

        z0_hat: (B, C, h, w) differentiable clean estimate. t: (B,) the process's timesteps.
        decode(z0_hat rows, row index) -> x0_hat rows (B_sel, C, H, W), needed by pixel-space
        terms. hr: (B, C, H, W) target images; z0: the target latent; mask: (B, 1, H, W), 1 =
        valid; paired: (B,) bool; diffusion: (B,) per-sample diffusion loss; last_layer: the
        parameter adaptive weights measure gradients at.

        Three stages: :func:`~diffsr.losses.plan.plan_step` (factors and rows),
        :meth:`_evaluate_terms` (the one decode and every term's contribution) and
        :meth:`_finish` (non-finite policy, dead terms, total, report).
        """
        self._check_inputs(
            z0_hat=z0_hat, t=t, decode=decode, hr=hr, z0=z0, mask=mask, paired=paired,
            diffusion=diffusion, last_layer=last_layer, adaptive=True,
        )
        self._step = int(step)
        b = z0_hat.shape[0]
        device = z0_hat.device
        fdtype = torch.promote_types(z0_hat.dtype, torch.float32)
        self._gan_cache.clear()
        plan = plan_step(self.terms, t=t, step=step, paired=paired, b=b, device=device, fdtype=fdtype)
        results, decoded = self._evaluate_terms(
            plan, z0_hat=z0_hat, step=step, decode=decode, hr=hr, z0=z0, mask=mask,
            diffusion=diffusion, last_layer=last_layer,
        )
        return self._finish(results, b, device, fdtype, decoded.calls, decoded.rows.numel(), z0_hat)

    # ------------------------------------------------------------------ stage 2: evaluate terms
    # (stage 1, the plan, is diffsr.losses.plan.plan_step)
    def _evaluate_terms(
        self, plan: StepPlan, *, z0_hat: Tensor, step: int, decode: Decode | None, hr: Tensor | None,
        z0: Tensor | None, mask: Tensor | None, diffusion: Tensor | None, last_layer: Tensor | None,
    ) -> tuple[list[_Computed], _Decoded]:
        """Decode the plan's pixel rows once, compute the diffusion term and every term, fill the
        GAN caches. Returns the results (diffusion first, then the terms in order) and the decode."""
        b = z0_hat.shape[0]
        decoded = self._shared_decode(plan.pixel_rows, decode, z0_hat, hr)
        results: list[_Computed] = []
        ref: Tensor | None = None
        if diffusion is not None:
            results.append(self._diffusion_term(diffusion, plan.paired, b))
            ref = results[0].contribution
        # non-adaptive terms first (the first one is the reference if there is no diffusion
        # term), then adaptive ones
        order = sorted(range(len(self.terms)), key=lambda k: isinstance(self.terms[k].weight, Adaptive))
        computed: dict[int, _Computed] = {}
        for k in order:
            computed[k] = self._evaluate_term(
                k, plan, decoded, ref, z0_hat=z0_hat, step=step, hr=hr, z0=z0, mask=mask, last_layer=last_layer
            )
            if ref is None and not isinstance(self.terms[k].weight, Adaptive):
                ref = computed[k].contribution
        results += [computed[k] for k in range(len(self.terms))]
        self._cache_gan(plan, decoded, hr, z0_hat)
        return results, decoded

    def _shared_decode(self, rows: Tensor, decode: Decode | None, z0_hat: Tensor, hr: Tensor | None) -> _Decoded:
        """x0_hat for the rows set in ``rows`` ((B,) bool, CPU); no decoder call when none is set."""
        union = rows.nonzero().squeeze(1)
        position = torch.full((rows.numel(),), -1, dtype=torch.long)
        if union.numel() == 0:
            return _Decoded(None, union, position, 0)
        assert decode is not None
        position[union] = torch.arange(union.numel())
        x0_hat, calls = self._decode(decode, z0_hat, union.to(z0_hat.device), hr)
        return _Decoded(x0_hat, union, position, calls)

    def _diffusion_term(self, diffusion: Tensor, paired: Tensor | None, b: int) -> _Computed:
        """The diffusion term: ``diffusion_weight * sum(diffusion) / B`` over the paired rows."""
        dw = self.diffusion_weight
        diff = diffusion.float() if diffusion.dtype in (torch.float16, torch.bfloat16) else diffusion
        raw, fraction = diff.detach().mean(), 1.0
        if paired is not None and not bool(paired.all()):
            # an unpaired row's "hr" is a placeholder (its lr_up): no diffusion target there.
            # Normalised by the whole batch B, like a gated term (docs/losses.md)
            keep = paired.to(diff.device)
            diff = torch.where(keep, diff, torch.zeros_like(diff))
            n_paired = int(paired.sum())
            raw, fraction = diff.detach().sum() / max(n_paired, 1), n_paired / b
        contribution = dw * diff.sum() / b if dw > 0 else None
        return _Computed("diffusion", contribution, raw, dw, fraction if dw > 0 else 0.0, track_dead=fraction > 0)

    def _evaluate_term(
        self, k: int, plan: StepPlan, decoded: _Decoded, ref: Tensor | None, *, z0_hat: Tensor, step: int,
        hr: Tensor | None, z0: Tensor | None, mask: Tensor | None, last_layer: Tensor | None,
    ) -> _Computed:
        """Term ``k`` on its active rows: per-sample loss, contribution (batch-normalised), report."""
        term = self.terms[k]
        module = term.module
        if hasattr(module, "set_step"):
            module.set_step(step)
        b, device = z0_hat.shape[0], z0_hat.device
        rows_cpu = plan.active[k].nonzero().squeeze(1)
        n = rows_cpu.numel()
        track = self._step >= int(getattr(module, "warmup", 0) or 0)
        if n == 0:
            ratio = self._ratios.get(term.key) if isinstance(term.weight, Adaptive) else None
            w_report: Tensor | float = plan.weights[k] * ratio if ratio is not None else plan.weights[k]
            return _Computed(term.key, None, None, w_report, 0.0, track)
        full = n == b
        rows = None if full else rows_cpu.to(device)
        m = mask if (mask is None or full) else mask[rows]
        if term.space == "pixel":
            x0_hat = decoded.x0_hat
            assert x0_hat is not None and hr is not None
            pred = x0_hat if n == decoded.rows.numel() else x0_hat[decoded.position[rows_cpu].to(device)]
            target = hr if full else hr[rows]
        else:
            assert z0 is not None
            pred = z0_hat if full else z0_hat[rows]
            target = z0 if full else z0[rows]
        loss = self._run_module(term, pred, target, m, n)
        w_report = plan.weights[k]
        if isinstance(term.weight, Adaptive):
            # the ratio compares the gated, batch-normalised term before its weight
            assert last_layer is not None
            g = plan.gates[k] if full else plan.gates[k][rows]
            unweighted = (g.to(loss.dtype) * loss).sum() / b
            ratio = self._adaptive_ratio(term, unweighted, ref, last_layer)
            w_report = plan.weights[k] * ratio
            contribution = unweighted * w_report
        else:
            f = plan.factors[k] if full else plan.factors[k][rows]
            contribution = (f.to(loss.dtype) * loss).sum() / b
        return _Computed(term.key, contribution, loss.detach().mean(), w_report, n / b, track)

    def _cache_gan(self, plan: StepPlan, decoded: _Decoded, hr: Tensor | None, z0_hat: Tensor) -> None:
        """What each discriminator learns from: fakes on its gate-open rows, reals on the paired
        ones among them (an unpaired row's hr is only a placeholder). Every GAN term gets an
        entry, maybe empty, so that every process steps its discriminator (collectives)."""
        device = z0_hat.device
        for k, rows_k in plan.gan_rows.items():
            d_rows = rows_k.nonzero().squeeze(1)
            if d_rows.numel() == 0 or hr is None or decoded.x0_hat is None:
                empty = (hr if hr is not None else z0_hat)[:0].detach()
                self._gan_cache[self.terms[k].key] = (empty, empty)
                continue
            fake = decoded.x0_hat[decoded.position[d_rows].to(device)].detach()
            real_rows = d_rows if plan.paired is None else d_rows[plan.paired[d_rows]]
            self._gan_cache[self.terms[k].key] = (hr[real_rows.to(device)].detach(), fake)

    # ------------------------------------------------------------------ stage 3: total, policies, report
    def _finish(
        self,
        results: list[_Computed],
        b: int,
        device: torch.device,
        fdtype: torch.dtype,
        decode_calls: int,
        decoded_rows: int,
        z0_hat: Tensor,
    ) -> tuple[Tensor, LossReport]:
        live = [r for r in results if r.contribution is not None]
        finite = [True] * len(live)
        zero = [False] * len(live)
        if live:
            # one device sync for every finiteness / dead-term check
            values = torch.stack([r.contribution.detach().to(fdtype) for r in live]).cpu()  # type: ignore[union-attr]
            finite = torch.isfinite(values).tolist()
            zero = values.eq(0).tolist()
        bad = [r.key for r, ok in zip(live, finite, strict=True) if not ok]
        skip_step = False
        if bad:
            self._bad_steps += 1
            if self.nonfinite_policy == "stop":
                raise NonFiniteError(
                    f"non-finite loss in term(s) {', '.join(bad)} at step {self._step} "
                    "(nonfinite policy 'stop')"
                )
            if self._bad_steps >= self.max_consecutive:
                raise NonFiniteError(
                    f"non-finite loss in term(s) {', '.join(bad)} for {self._bad_steps} consecutive steps "
                    f"(up to step {self._step}); lower the learning rate or check the data"
                )
            skip_step = self.nonfinite_policy == "skip_step"
            # one warning per streak, when it ends (flush_nonfinite): a diverging run shows its error, not
            # max_consecutive - 1 warnings before it
            self._streak = (self._streak[0] if self._bad_steps > 1 else self._step, self._streak[1] | set(bad))
            logger.debug("step %d: non-finite loss in %s", self._step, ", ".join(bad))
        else:
            self.flush_nonfinite()
        self._track_dead(live, finite, zero)

        kept = [r.contribution for r, ok in zip(live, finite, strict=True) if ok]
        if kept:
            total = kept[0]
            for c in kept[1:]:
                total = total + c  # type: ignore[operator]
        else:
            total = torch.zeros((), device=device, dtype=fdtype, requires_grad=z0_hat.requires_grad)
        assert isinstance(total, Tensor)

        ok_by_key = {r.key: ok for r, ok in zip(live, finite, strict=True)}
        rows: list[Tensor] = []
        skipped: list[bool] = []
        for r in results:
            ok = ok_by_key.get(r.key, True)
            zero_t = torch.zeros((), device=device, dtype=fdtype)
            raw = r.raw.to(fdtype) if r.raw is not None else zero_t
            weighted = r.contribution.detach().to(fdtype) if (r.contribution is not None and ok) else zero_t
            weight = r.weight.detach().to(fdtype) if isinstance(r.weight, Tensor) else zero_t + r.weight
            rows.append(torch.stack([raw, weighted, weight, zero_t + r.active_fraction]))
            skipped.append(not ok)
        values = torch.stack(rows) if rows else torch.zeros(0, 4, device=device, dtype=fdtype)
        report = LossReport.from_tensors(
            [r.key for r in results], values, total.detach(), skipped,
            decode_calls=decode_calls, decoded_rows=decoded_rows, skip_step=skip_step, nonfinite=len(bad),
        )
        return total, report

    def _track_dead(self, live: list[_Computed], finite: list[bool], zero: list[bool]) -> None:
        if not self.dead_after:
            return
        for r, ok, is_zero in zip(live, finite, zero, strict=True):
            if not r.track_dead or not ok:
                continue
            count = self._dead_counts.get(r.key, 0) + 1 if is_zero else 0
            self._dead_counts[r.key] = count
            if count >= self.dead_after:
                raise DeadTermError(
                    f"loss term '{r.key}' was active for {count} consecutive steps but contributed "
                    "exactly 0: it is weighted but never computed "
                    "(check that its module returns the per-sample loss)"
                )

    # ------------------------------------------------------------------ GAN
    def discriminator_step(self, step: int) -> dict[str, float]:
        """Train every GAN term's discriminator on the rows decoded by the last forward.

        Calls ``module.discriminator_step(real=hr rows, fake=x0_hat rows (detached), step=step)``
        and returns its statistics as ``{"<key>/<name>": value}``; the cache is cleared after.
        The rows are those the term's gate (and pairing) opens, whatever its weight (a GAN
        warm-up trains D while the generator weight is 0); reals are the paired ones. Every GAN
        term of the last forward is called, with empty tensors when it had no rows: the module
        then does not learn, but in a multi-process run it still takes part in the gradient
        all-reduce, so the processes' collectives match.
        """
        out: dict[str, float] = {}
        for key, (real, fake) in self._gan_cache.items():
            stats = self.term_modules[key].discriminator_step(real=real, fake=fake, step=step)
            out.update({f"{key}/{name}": float(v) for name, v in (stats or {}).items()})
        self._gan_cache.clear()
        return out

    # ------------------------------------------------------------------ audit probe
    def term_losses(
        self,
        *,
        z0_hat: Tensor,
        t: Tensor | None = None,
        decode: Decode | None = None,
        hr: Tensor | None = None,
        z0: Tensor | None = None,
        mask: Tensor | None = None,
        paired: Tensor | None = None,
        diffusion: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Every term's mean loss over every row, weights and gates forced open (0-dim, in the graph).

        The probe of :func:`diffsr.train.audit.audit_reachability`: ``"diffusion"`` is included
        when ``diffusion`` is given. ``t`` and ``paired`` are accepted for symmetry and ignored.
        A GAN term is evaluated as if past its warm-up.
        """
        self._check_inputs(
            z0_hat=z0_hat, t=t, decode=decode, hr=hr, z0=z0, mask=mask, paired=paired,
            diffusion=diffusion, last_layer=None, adaptive=False,
        )
        b = z0_hat.shape[0]
        out: dict[str, Tensor] = {}
        if diffusion is not None:
            out["diffusion"] = diffusion.mean()
        x0_hat = None
        if self.needs_decoder:
            assert decode is not None
            x0_hat, _ = self._decode(decode, z0_hat, torch.arange(b, device=z0_hat.device), hr)
        for term in self.terms:
            module = term.module
            warmup = int(getattr(module, "warmup", 0) or 0)
            if hasattr(module, "set_step"):
                module.set_step(max(self._step, warmup))
            if term.space == "pixel":
                loss = self._run_module(term, x0_hat, hr, mask, b)  # type: ignore[arg-type]
            else:
                loss = self._run_module(term, z0_hat, z0, mask, b)  # type: ignore[arg-type]
            if hasattr(module, "set_step"):
                module.set_step(self._step)
            out[term.key] = loss.mean()
        return out
