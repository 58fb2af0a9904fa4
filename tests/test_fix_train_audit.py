"""The gradient audit checks the denoiser's parameters, not a learnable codec's (layout all_learnable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffsr.cli.audit import run_audit
from diffsr.config import load_config
from diffsr.core.errors import ConfigError
from diffsr.model import SRModel
from diffsr.train.trainer import Trainer

LEARNABLE = [
    "data.patch_size=32", "data.batch_size=2", "net.width=16", "net.channel_mult=[1,2]", "net.attention_levels=[]",
    "train.threads=2", "train.time_limit=null", "train.steps=1", "train.log_every=1",
    "losses.terms=[{name: l1}]",
]



def _detach_before_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    original = SRModel.decoder_for

    def decoder_for(self: SRModel, zc):  # type: ignore[no-untyped-def]
        decode = original(self, zc)
        return lambda z, index: decode(z.detach(), index)  # the classic bug: z0_hat cut off

    monkeypatch.setattr(SRModel, "decoder_for", decoder_for)


def test_audit_cli_healthy_learnable_codec_passes() -> None:
    assert "OK" in run_audit("difiisr-dwt-all-learnable", LEARNABLE)


def test_audit_cli_detach_before_learnable_decode_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    _detach_before_decode(monkeypatch)
    with pytest.raises(ConfigError, match="'l1'"):
        run_audit("difiisr-dwt-all-learnable", LEARNABLE)


def test_trainer_audit_detach_before_learnable_decode_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocky_pngs: Path
) -> None:
    data = blocky_pngs
    cfg = load_config("difiisr-dwt-all-learnable", [*LEARNABLE, f"data.train={data}", f"data.val={data}"])
    _detach_before_decode(monkeypatch)
    with pytest.raises(ConfigError, match="'l1'"):
        Trainer(cfg, tmp_path / "run", progress=False).fit()
