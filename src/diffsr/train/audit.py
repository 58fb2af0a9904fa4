"""Pre-flight audits of the loss stack (run before the first step and by ``diffsr audit``).

The field's classic loss bugs (DESIGN §7) each have a check here, so they fail before step 0
with one line naming the term, instead of training silently without the term:

1. :func:`audit_config`: a pixel-space term with no decoder (seed 002), a gate that cannot
   open inside the process's t range or is written in another process's units, a schedule
   that never switches its term on within ``train.steps``, latent_perceptual without the VAE.
2. :func:`audit_reachability`: one probe forward with every term forced open; a term whose
   loss has no gradient path to the network parameters (``.detach()``, a numpy round trip, a
   ``no_grad`` decode: seed 004) or whose gradient is NaN/Inf is named.
3. :func:`audit_dead`: terms the stack saw active but contributing exactly 0 (seed 003); the
   stack itself raises after ``dead_after`` consecutive such steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diffsr.config import Config
from diffsr.core.errors import ConfigError
from diffsr.losses import SCHEDULES, TERMS
from diffsr.losses.gates import build_gate
from diffsr.losses.schedules import build_schedule
from diffsr.losses.stack import LossStack
from diffsr.processes import PROCESSES

__all__ = ["AuditResult", "audit_config", "audit_dead", "audit_model", "audit_reachability"]

logger = logging.getLogger(__name__)

CLASSIC_CAUSES = ".detach(), a numpy round trip or a no_grad decode"


def _names(keys: Sequence[str]) -> str:
    return ", ".join(f"'{k}'" for k in keys)


# ----------------------------------------------------------------------------- config


def audit_config(cfg: Config, *, has_decoder: bool, t_range: tuple[float, float] | None = None,
                 process: Any = None) -> list[str]:
    """Raise a one-line :class:`ConfigError` naming the first impossible or inert loss term.

    has_decoder: whether the codec can decode z0_hat to pixels for pixel-space terms.
    t_range: the process's (lowest, highest) training t, in its own units (default: the
    process's). process: the built process (built from the config when None).
    Returns warnings that do not stop training (logged too), e.g. fidelity terms that never act
    at the timesteps the configured sampler uses.
    """
    if process is None:
        from diffsr.processes import build_process

        process = build_process(cfg.process)
    if t_range is None:
        t_range = process.t_range
    losses = cfg.losses
    t_lo, t_hi = float(t_range[0]), float(t_range[1])
    last_step = max(cfg.train.steps - 1, 0)  # steps run: 0 .. train.steps - 1
    if losses.diffusion_weight == 0 and not losses.terms:
        raise ConfigError("losses: diffusion_weight is 0 and there are no terms: nothing to train")
    for i, term in enumerate(losses.terms):
        where = f"losses.terms.{i} ('{term.key}')"
        caps = TERMS.caps(term.name)
        if caps.space == "pixel" and not has_decoder:
            raise ConfigError(f"{where}: term '{term.key}' needs pixel space but the codec has no decoder")
        if caps.requires_codec is not None and cfg.codec.name != caps.requires_codec:
            raise ConfigError(
                f"{where}: {term.name} needs the {caps.requires_codec.upper()} codec "
                f"(codec.name is '{cfg.codec.name}')"
            )
        _audit_gate(where, term.gate, t_lo, t_hi, process)
        schedule = build_schedule(term.weight)
        peak = schedule.max_until(last_step)
        if peak <= 0:
            raise ConfigError(
                f"{where}: weight schedule ({schedule.describe()}) stays 0 for all train.steps="
                f"{cfg.train.steps}: the term never switches on (remove it or fix the schedule)"
            )
    adaptive = [t.key for t in losses.terms if SCHEDULES.caps(t.weight.kind).adaptive]
    if adaptive and losses.diffusion_weight == 0 and len(adaptive) == len(losses.terms):
        raise ConfigError(
            f"losses: adaptive weight(s) for {_names(adaptive)} need a reference: "
            "diffusion_weight > 0 or a term with a fixed schedule"
        )
    return _sampler_warnings(cfg, process)


def _sampler_warnings(cfg: Config, process: Any) -> list[str]:
    """Fidelity terms that never act at the times the configured sampler evaluates the denoiser.

    The output is made at those times (the faithful one-step output: at the process's start
    time), so a fidelity term gated away from them trains the network where it is not used
    (the demo once gated its L1 to t <= 1 and sampled at t = 3). A warning, not an error.
    """
    pixel_terms = [t for t in cfg.losses.terms if TERMS.caps(t.name).space == "pixel"]
    if not pixel_terms or PROCESSES.caps(cfg.process.name).feed_forward:
        return []
    steps = 1 if cfg.sample.detail is not None else cfg.sample.steps
    times = process.sample_schedule(steps)
    reaching = [t.key for t in pixel_terms
                if any(build_gate(t.gate, process=process)(torch.tensor([time])).item() > 0 for time in times)]
    if reaching:
        return []
    message = (f"loss audit: fidelity term(s) {_names([t.key for t in pixel_terms])} never act at the times the "
               f"sampler uses (t in {[round(t, 6) for t in times]}): the output is made where no fidelity term "
               "trained the network; gate them with {kind: sampler} (or train those times)")
    logger.warning(message)
    return [message]


def _audit_gate(where: str, gate_cfg: object, t_lo: float, t_hi: float, process: Any) -> None:
    gate = build_gate(gate_cfg, process=process)
    problem = gate.check_units(t_lo, t_hi)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    if gate.max_over(t_lo, t_hi) <= 0:
        raise ConfigError(f"{where}: gate ({gate.describe()}) never opens for t in [{t_lo:g}, {t_hi:g}]")


# ----------------------------------------------------------------------------- reachability


@dataclass
class AuditResult:
    """Which terms get a finite, non-zero gradient to the parameters."""

    unreachable: list[str] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when some term is unreachable or non-finite."""
        return bool(self.unreachable or self.nonfinite)

    def message(self) -> str:
        """One line describing the failures ('' if none)."""
        parts = []
        if self.unreachable:
            parts.append(
                f"no gradient reaches the network from term(s) {_names(self.unreachable)} "
                f"(classic causes: {CLASSIC_CAUSES})"
            )
        if self.nonfinite:
            parts.append(f"NaN/Inf loss or gradient from term(s) {_names(self.nonfinite)}")
        return "loss audit: " + "; ".join(parts) if parts else ""

    def raise_if_failed(self) -> None:
        """Raise a one-line :class:`ConfigError` naming the broken term(s)."""
        if self.failed:
            raise ConfigError(self.message())


def audit_reachability(
    stack: LossStack,
    probe: Callable[[], dict[str, Tensor]],
    params: Sequence[torch.nn.Parameter],
) -> AuditResult:
    """Check that every term's loss has a finite, non-zero gradient to ``params``.

    probe(): one forward returning ``stack.term_losses(...)`` (every term forced open), plus
    ``"diffusion"`` if wanted. A term is *unreachable* when its loss has no graph, every
    gradient is None or zero, or the probe did not return it; *non-finite* when the loss or a
    gradient has NaN/Inf.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("audit_reachability: no parameters that require grad")
    losses = probe()
    result = AuditResult()
    for key, loss in losses.items():
        if not isinstance(loss, Tensor) or not loss.requires_grad:
            result.unreachable.append(key)
            continue
        loss = loss.sum() if loss.ndim else loss
        if not bool(torch.isfinite(loss.detach())):
            result.nonfinite.append(key)
            continue
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        present = [g for g in grads if g is not None]
        if any(not bool(torch.isfinite(g).all()) for g in present):
            result.nonfinite.append(key)
        elif not present or all(not bool(g.any()) for g in present):
            result.unreachable.append(key)
        else:
            result.ok.append(key)
    missing = [k for k in stack.keys if k not in losses]
    result.unreachable += missing
    for key in result.ok:
        logger.debug("loss audit: term '%s' reaches the network", key)
    return result


def audit_model(model: Any, stack: LossStack, batch: dict[str, Any], forward: Callable[[], Any]) -> AuditResult:
    """The reachability audit of a model's training forward: raises a one-line ConfigError on failure.

    forward(): THE training forward on ``batch`` (:meth:`diffsr.model.SRModel.forward`, with the
    caller's timesteps and noise). Every term is probed with its weight and gate forced open
    (:meth:`LossStack.term_losses`), the diffusion term included. Only the denoiser's parameters
    count: a learnable codec's convolutions would otherwise make a term whose z0_hat is
    detached before the decode look reachable.
    """
    from diffsr.model import stack_inputs

    def probe() -> dict[str, Tensor]:
        return stack.term_losses(**stack_inputs(forward(), batch, model))

    params = [p for p in model.net.parameters() if p.requires_grad]
    result = audit_reachability(stack, probe, params)
    model.zero_grad(set_to_none=True)
    result.raise_if_failed()
    return result


# ----------------------------------------------------------------------------- dead terms


def audit_dead(stack: LossStack, min_steps: int = 1) -> list[str]:
    """Terms the stack saw active but contributing exactly 0 for at least ``min_steps`` steps in a row."""
    return [k for k, n in stack.dead_counts.items() if n >= min_steps]
