"""train.compile: loss gates switching on and off must not recompile the denoiser.

The trainer compiles ``model.net`` only (``torch.compile(net, dynamic=False)``); the loss stack
selects the rows to decode outside of it, so the net always sees the full batch. The compile
counter is torch's own (``torch._dynamo.testing.CompileCounter`` as the backend: one count per
graph dynamo compiles, recompiles included), which also keeps the test fast (no inductor).
"""

from __future__ import annotations

import pytest
import torch

from diffsr.config import LossesConfig, load_config
from diffsr.losses import build_loss_stack
from diffsr.model import build_model

dynamo = pytest.importorskip("torch._dynamo", reason="torch.compile (dynamo) is unavailable")
CompileCounter = pytest.importorskip("torch._dynamo.testing", reason="torch._dynamo.testing missing").CompileCounter

B, SIZE = 4, 32

#: per step: the timesteps of the batch (ResShift T 4: t in 0..3), so that the gated terms see
#: all rows, some rows and no rows active, in both orders
T_PLAN = [[0, 0, 0, 0], [3, 3, 3, 3], [0, 3, 1, 2], [3, 3, 3, 3], [1, 1, 3, 0], [0, 0, 0, 0]]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test starts and ends with dynamo's caches empty (no state leaks into other tests)."""
    dynamo.reset()
    yield
    dynamo.reset()


def _setup(counter: CompileCounter) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, torch.Tensor]]:
    cfg = load_config("demo", [f"data.batch_size={B}", f"data.patch_size={SIZE}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.net = torch.compile(model.net, backend=counter, dynamic=False)
    stack = build_loss_stack(
        LossesConfig(terms=[
            {"name": "l1", "gate": {"kind": "hard", "t_max": 1}},
            {"name": "ssim", "gate": {"kind": "linear", "t_max": 2}, "window": 7},
            # a weight schedule that switches the term on after step 3
            {"name": "edge", "weight": {"kind": "ramp", "value": 0.1, "warmup": 3, "ramp_end": 4}},
        ]),
        channels=1,
    )
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(B, 1, SIZE, SIZE, generator=gen)
    lr_up = torch.nn.functional.interpolate(
        torch.nn.functional.avg_pool2d(hr, 4), scale_factor=4, mode="bicubic"
    ).clamp(0, 1)
    return model, stack, {"hr": hr, "lr_up": lr_up}


def _step(model, stack, batch, step: int, t: list[int]) -> tuple[float, int]:
    """One training step with the given timesteps; returns (loss, rows decoded)."""
    model.process.sample_t = lambda b, device, generator=None: torch.tensor(t, dtype=torch.float32)
    out = model(batch["hr"], batch["lr_up"], generator=torch.Generator().manual_seed(step))
    rows = 0
    inner = model.decoder_for(out.zc)

    def decode(z, index):
        nonlocal rows
        rows += int(index.numel())
        return inner(z, index)

    total, _ = stack(z0_hat=out.z0_hat, t=out.t, step=step, decode=decode, hr=batch["hr"], z0=out.z0.z,
                     mask=None, paired=None, diffusion=out.diffusion)
    total.backward()
    model.zero_grad(set_to_none=True)
    return float(total.detach()), rows


def test_gates_switching_do_not_recompile() -> None:
    counter = CompileCounter()
    model, stack, batch = _setup(counter)
    model.train()
    decoded = []
    _, rows = _step(model, stack, batch, 0, T_PLAN[0])
    decoded.append(rows)
    after_first = counter.frame_count
    assert after_first >= 1, "the compiled net was never compiled (the counter does not see it)"
    for step, t in enumerate(T_PLAN[1:], start=1):
        _, rows = _step(model, stack, batch, step, t)
        decoded.append(rows)
    # the gates really switched: all rows, no rows and some rows were decoded
    assert 0 in decoded and B in decoded and any(0 < r < B for r in decoded), decoded
    assert counter.frame_count == after_first, (
        f"the denoiser recompiled {counter.frame_count - after_first} time(s) as the gates switched"
    )


def test_counter_sees_a_recompile() -> None:
    """The check above can fail: a new batch size under dynamic=False does recompile."""
    counter = CompileCounter()
    model, stack, batch = _setup(counter)
    _step(model, stack, batch, 0, T_PLAN[0])
    before = counter.frame_count
    half = {k: v[: B // 2] for k, v in batch.items()}
    _step(model, stack, half, 1, T_PLAN[0][: B // 2])
    assert counter.frame_count > before
