"""data.num_workers feeds a real DataLoader: batches (and so a whole run) are bitwise those of 0 workers."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from diffsr.config import load_config
from diffsr.data.datasets import build_datasets
from diffsr.train.batches import BatchStream, StepBatches, step_batches

TINY = ["data.patch_size=32", "data.batch_size=4", "train.steps=4", "train.log_every=1", "train.ckpt_every=4",
        "train.ema_decay=null", "net.size=tiny", "data.degradation.name=blur_noise", "data.degradation.poisson=0.5"]


def test_worker_batches_equal_inline_batches() -> None:
    cfg = load_config("demo", TINY)
    train_set, _ = build_datasets(cfg.data, seed=3)
    batches = StepBatches(BatchStream(train_set, 4, seed=3), 1, 3)  # rank 1 of a 2-process run: items 1..2
    inline = list(step_batches(batches, 2, 7, workers=0))
    workers = list(step_batches(batches, 2, 7, workers=2))
    assert len(inline) == len(workers) == 5
    for a, b in zip(inline, workers, strict=True):
        assert a["name"] == b["name"]
        for key in ("hr", "lr", "lr_up", "mask", "paired"):
            assert torch.equal(a[key], b[key]), key
    # and the stream is what it says: step s holds global items s*B + 1 .. s*B + 2
    assert inline[0]["hr"].shape[0] == 2


def test_a_run_with_two_workers_equals_a_run_without(tmp_path: Path) -> None:
    from diffsr.train.trainer import Trainer

    weights = []
    for workers in (0, 2):
        cfg = load_config("demo", [*TINY, f"data.num_workers={workers}"])
        Trainer(cfg, tmp_path / f"w{workers}", progress=False).fit()
        weights.append(load_file(str(tmp_path / f"w{workers}" / "checkpoints" / "step_0000004" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
