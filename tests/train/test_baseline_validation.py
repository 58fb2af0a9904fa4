"""A baseline preset (EDSR: net edsr, process direct) validates during training (the sampler needs lr=)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from diffsr.cli import main


def test_diffsr_train_edsr_validates_every_step(tmp_path: Path, blocky_pngs: Path) -> None:
    data = blocky_pngs
    sets = [
        "data.patch_size=32", "data.batch_size=2", "train.steps=2", "train.val_every=1", "data.val_images=2",
        "train.log_every=1", "train.threads=1", "train.time_limit=null", "train.warmup_steps=0",
        f"data.train={data}", f"data.val={data}",
    ]
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        main(["train", "edsr", "--out", str(run), "--no-progress", *[a for s in sets for a in ("--set", s)]])
    except SystemExit as exc:
        assert not exc.code, exc
    finally:
        torch.set_num_threads(threads)
    from diffsr.config import load_config
    from diffsr.train.checkpoint import list_checkpoints
    from diffsr.train.trainer import Trainer

    assert [p.name for p in list_checkpoints(run)] == ["step_0000002"]

    # the validation numbers themselves: finite PSNR of the baseline's SR
    cfg = load_config("edsr", [*sets, "train.steps=3"])
    result = Trainer(cfg, run, resume=True, progress=False).fit()
    assert result.step == 3 and np.isfinite(result.val["val/psnr"]), json.dumps(result.val)
