"""fp16 training keeps its GradScaler state (loss scale, growth tracker) across a resume.

Accelerate creates a GradScaler only for fp16 on a GPU; here the CPU GradScaler
(``torch.amp.GradScaler("cpu")``) is given to the Accelerator, so the Trainer's fp16 path
(scaled backward, unscale before clipping, ``scaler.step`` / ``update``) runs on the CI machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.config import load_config
from diffsr.train.checkpoint import read_checkpoint
from diffsr.train.trainer import Trainer

TINY = [
    "data.patch_size=32", "data.batch_size=2", "net.width=8", "net.channel_mult=[1,2]", "net.attention_levels=[]",
    "train.log_every=1", "train.threads=2", "train.time_limit=null", "train.warmup_steps=0", "sample.steps=1",
    "process.steps=2", "train.audit=false", "train.steps=6", "train.ckpt_every=100",
]


@pytest.fixture
def cpu_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import Accelerator

    init = Accelerator.__init__

    def with_scaler(self: Accelerator, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        # grows x2 after every finite step: a resume that forgot it would restart at 256
        self.scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=1)

    monkeypatch.setattr(Accelerator, "__init__", with_scaler)


def test_resume_keeps_the_loss_scale(tmp_path: Path, blocky_pngs: Path, cpu_scaler: None) -> None:
    cfg = load_config("demo", [*TINY, f"data.train={blocky_pngs}", f"data.val={blocky_pngs}"])
    straight = Trainer(cfg, tmp_path / "a", progress=False)
    straight.fit()
    Trainer(cfg, tmp_path / "b", progress=False).fit(stop_after=3)
    resumed = Trainer(cfg, tmp_path / "b", resume=True, progress=False)
    resumed.fit()
    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    # the scaler did act: 6 finite steps from 256 with growth every step
    assert a["state"]["scaler"]["scale"] == 256.0 * 2**6
    assert b["state"]["scaler"] == a["state"]["scaler"]
    assert resumed.accelerator.scaler.get_scale() == straight.accelerator.scaler.get_scale()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_an_overflow_lowers_the_scale_and_skips_the_step(tmp_path: Path, blocky_pngs: Path, cpu_scaler: None) -> None:
    """Inf gradients at step 1: no update (weights finite), the scale halves and the step is counted as skipped."""
    cfg = load_config("demo", [*TINY, "train.steps=2", f"data.train={blocky_pngs}", f"data.val={blocky_pngs}"])

    class InfGrad(Trainer):
        def _sync_grads(self) -> None:
            super()._sync_grads()
            if self.step == 1:
                next(p for p in self.model.parameters() if p.grad is not None).grad.fill_(float("inf"))

    trainer = InfGrad(cfg, tmp_path / "c", progress=False)
    result = trainer.fit()
    assert result.skipped_steps == 1
    # step 0 grew 256 -> 512; the overflow at step 1 halved it back (growth_factor 2, backoff 0.5)
    assert trainer.accelerator.scaler.get_scale() == 256.0
    assert all(torch.isfinite(v).all() for v in read_checkpoint(tmp_path / "c")["model"].values())
