"""train.compile: checkpoints keep the plain keys ('net.*'), and old compiled ones ('net._orig_mod.*') load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.config import load_config
from diffsr.model import build_model
from diffsr.train.checkpoint import read_checkpoint
from diffsr.train.trainer import Trainer, load_trainable_state, trainable_state

TINY = [
    "data.patch_size=32", "data.batch_size=2", "net.width=8", "net.channel_mult=[1,2]", "net.attention_levels=[]",
    "train.log_every=1", "train.threads=2", "train.time_limit=null", "train.warmup_steps=0",
    "sample.steps=1", "process.steps=2", "train.audit=false", "train.steps=2", "train.ema_decay=0.9",
]


def test_old_compiled_keys_load_into_plain_and_compiled_models() -> None:
    cfg = load_config("demo", TINY)
    torch.manual_seed(0)
    source = build_model(cfg)
    source.net = torch.compile(source.net, dynamic=False)  # what train.compile used to save (never run)
    saved = trainable_state(source)
    assert saved and not any("_orig_mod" in k for k in saved)  # saved plain even from a wrapped net
    old = dict(source.state_dict())  # an old checkpoint: 'net._orig_mod.*'
    assert any(k.startswith("net._orig_mod.") for k in old)
    plain = build_model(cfg)
    load_trainable_state(plain, old)
    wrapped = build_model(cfg)
    wrapped.net = torch.compile(wrapped.net, dynamic=False)
    load_trainable_state(wrapped, {k.replace("_orig_mod.", ""): v for k, v in old.items()})
    for k, v in saved.items():
        assert torch.equal(plain.state_dict()[k], v)
        assert torch.equal(trainable_state(wrapped)[k], v)


dynamo = pytest.importorskip("torch._dynamo", reason="torch.compile (dynamo) is unavailable")


def test_compiled_training_checkpoint_loads_for_inference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocky_pngs: Path
) -> None:
    from torch._dynamo.testing import CompileCounter

    # dynamo's own tracing, without inductor's C++ build (the keys are what is under test)
    counter = CompileCounter()
    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_(self, **{**kw, "backend": counter}))
    data = blocky_pngs
    cfg = load_config("demo", [*TINY, "train.compile=true", f"data.train={data}", f"data.val={data}"])
    dynamo.reset()
    try:
        Trainer(cfg, tmp_path / "run", progress=False).fit()
    finally:
        dynamo.reset()
    assert counter.frame_count >= 1  # the net really was compiled
    ck = read_checkpoint(tmp_path / "run")
    for name in ("model", "ema"):
        assert ck[name] and not any("_orig_mod" in k for k in ck[name]), name
    from diffsr.sampling.infer import load_model

    loaded = load_model(tmp_path / "run", device="cpu")
    assert loaded is not None
    # resume works too (the optimiser and EMA line up with the plain keys)
    more = load_config("demo", [*TINY, "train.compile=true", "train.steps=3", f"data.train={data}",
                                f"data.val={data}"])
    assert Trainer(more, tmp_path / "run", resume=True, progress=False).fit().step == 3
