"""The sampler gate: fidelity terms act exactly at the timesteps the sampler uses (issue 17).

The demo used to gate L1 to t <= 1 while its one-step sampler starts at t = T - 1: the term that
should make the output faithful never trained the timestep that makes the output. These tests
fail when the gate does not reach the sampled timestep.
"""

from __future__ import annotations

import pytest
import torch

from diffsr.config import load_config
from diffsr.losses import build_loss_stack
from diffsr.losses.gates import SamplerGateConfig, build_gate
from diffsr.model import build_model, stack_inputs


@pytest.mark.parametrize(("process", "start"), [
    ({"name": "resshift", "steps": 4}, 3.0),   # ResShift's one-step sampler starts at t = T - 1
    ({"name": "ddpm", "train_steps": 10, "sample_steps": 1}, 9.0),  # DDPM's at t = T - 1
    ({"name": "flow"}, 1.0),                   # rectified flow's at t = 1
])
def test_the_one_step_sampler_gate_is_one_at_its_start_time_only(process: dict, start: float) -> None:
    cfg = load_config("demo", [f"process={process}".replace("'", "")])
    proc = build_model(cfg).process
    assert proc.sample_schedule(1)[0] == pytest.approx(start)
    gate = build_gate(SamplerGateConfig(), process=proc)
    # flow trains t up to 1 - 1e-5 (its clamp): still the sampler's time; any other time gets 0
    at_start = torch.tensor([start - 1e-5 if process["name"] == "flow" else start])
    assert gate(at_start).item() == 1.0
    elsewhere = torch.tensor([0.0, start / 2, start * 0.99 if start > 1 else 0.9])
    assert gate(elsewhere).tolist() == [0.0, 0.0, 0.0]


def test_a_four_step_sampler_gate_covers_each_time_the_sampler_visits() -> None:
    cfg = load_config("demo", ["process.steps=4"])
    proc = build_model(cfg).process
    times = proc.sample_schedule(4)
    gate = build_gate(SamplerGateConfig(steps=4), process=proc)
    assert gate(torch.tensor([float(t) for t in times])).tolist() == [1.0] * len(times)


def _l1_at_the_sampler_start(gate: dict) -> tuple[float, float, float]:
    """The L1 term's active fraction, contribution and gradient norm on rows at the 1-step start time."""
    torch.manual_seed(0)
    cfg = load_config("demo", ["data.channels=1", "net.size=tiny",
                               f"losses.terms=[{{name: l1, weight: {{kind: constant, value: 1.0}}, gate: {gate}}}]"
                               .replace("'", "")])
    model = build_model(cfg)
    stack = build_loss_stack(cfg.losses, channels=1, codec=model.codec, total_steps=10, process=model.process)
    hr = torch.rand(2, 1, 32, 32)
    batch = {"hr": hr, "lr_up": hr, "lr": hr[..., ::4, ::4]}
    start = model.process.sample_schedule(1)[0]
    outputs = model(hr, hr, lr=batch["lr"], t=torch.full((2,), float(start)), noise=torch.randn(2, 16, 8, 8))
    total, report = stack(**stack_inputs(outputs, batch, model), step=5, last_layer=model.last_layer)
    fidelity = total - report.terms["diffusion"].weighted if "diffusion" in report.terms else total
    fidelity = fidelity if isinstance(fidelity, torch.Tensor) else torch.tensor(float(fidelity))
    grads = torch.autograd.grad(fidelity, [p for p in model.parameters() if p.requires_grad],
                                allow_unused=True) if fidelity.requires_grad else []
    norm = sum(float(g.norm()) for g in grads if g is not None)
    return report.terms["l1"].active_fraction, float(report.terms["l1"].weighted), norm


def test_the_sampler_gate_trains_the_timestep_that_makes_the_output() -> None:
    active, weighted, grad = _l1_at_the_sampler_start("{kind: sampler}")
    assert active == 1.0 and weighted > 0 and grad > 0


def test_a_low_noise_gate_never_reaches_the_one_step_output() -> None:
    """The old demo recipe: L1 at t <= 1 gives the sampled timestep nothing (what the audit warns of)."""
    active, weighted, grad = _l1_at_the_sampler_start("{kind: hard, t_max: 1}")
    assert active == 0.0 and weighted == 0.0 and grad == 0.0
