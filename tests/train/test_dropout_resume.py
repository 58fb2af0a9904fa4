"""Exact resume with dropout: the global RNG restarts from (seed, step, rank) every step."""

from __future__ import annotations

from pathlib import Path

import torch

from diffsr.config import load_config
from diffsr.train.checkpoint import read_checkpoint
from diffsr.train.trainer import Trainer

TINY = [
    "data.patch_size=32", "data.batch_size=2", "net.width=8", "net.channel_mult=[1,2]", "net.attention_levels=[]",
    "net.dropout=0.1", "train.log_every=1", "train.threads=2", "train.time_limit=null", "train.warmup_steps=0",
    "sample.steps=1", "process.steps=2", "train.audit=false", "train.steps=4", "train.ckpt_every=100",
]


def test_four_steps_equal_two_plus_resume_plus_two_with_dropout(tmp_path: Path, blocky_pngs: Path) -> None:
    data = blocky_pngs
    cfg = load_config("demo", [*TINY, f"data.train={data}", f"data.val={data}"])
    Trainer(cfg, tmp_path / "a", progress=False).fit()
    Trainer(cfg, tmp_path / "b", progress=False).fit(stop_after=2)
    torch.rand(123)  # whatever else the process does with the global RNG in between
    Trainer(cfg, tmp_path / "b", resume=True, progress=False).fit()
    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    assert a["state"]["step"] == b["state"]["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # dropout does act: without it the weights differ
    plain = load_config("demo", [*TINY, "net.dropout=0.0", f"data.train={data}", f"data.val={data}"])
    Trainer(plain, tmp_path / "c", progress=False).fit()
    c = read_checkpoint(tmp_path / "c")
    assert any(not torch.equal(v, c["model"][k]) for k, v in a["model"].items())
