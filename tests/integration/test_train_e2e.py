"""End to end on CPU: train a few steps, checkpoint, resume exactly, sample, CLI sr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffsr.config import load_config
from diffsr.train.checkpoint import list_checkpoints, read_checkpoint
from diffsr.train.trainer import Trainer

TINY = [
    "data.patch_size=32", "data.batch_size=4", "net.width=16", "net.channel_mult=[1,2]",
    "train.log_every=1", "train.threads=2", "train.time_limit=null", "train.warmup_steps=2",
    "sample.steps=2", "process.steps=2",
]


def _images(folder: Path, n: int = 4, size: int = 48, bits: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        base = rng.random((size // 8, size // 8))
        img = np.kron(base, np.ones((8, 8))) * 0.7 + 0.3 * rng.random((size, size))
        if bits == 16:
            Image.fromarray((img * 65535).astype(np.uint16)).save(folder / f"img{i}.png")
        else:
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_train_checkpoint_and_sample(tmp_path: Path) -> None:
    cfg = load_config("demo", [*TINY, "train.steps=4", "train.ckpt_every=2", "train.val_every=4",
                               "data.val_images=2"])
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert result.step == 4
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000002", "step_0000004"]
    rep = result.last_report
    assert set(rep["terms"]) == {"diffusion", "l1"} and np.isfinite(rep["total"])
    assert result.val["val/images"] >= 1 and np.isfinite(result.val["val/psnr"])
    assert (tmp_path / "run" / "tensorboard").is_dir()

    from diffsr.sampling.infer import load_model, super_resolve

    loaded = load_model(tmp_path / "run", device="cpu")
    lr = torch.rand(1, 1, 10, 14)
    sr = super_resolve(loaded, lr, steps=2)
    assert sr.shape == (1, 1, 40, 56) and float(sr.min()) >= 0 and float(sr.max()) <= 1
    # an RGB input with a grey model: channels processed separately
    assert super_resolve(loaded, torch.rand(1, 3, 8, 8), steps=1).shape == (1, 3, 32, 32)


STAGED_GAN = [
    *TINY, "codec.name=pixel", "process={name: flow, sample_steps: 2}",
    "losses.terms=[{name: l1, weight: {kind: stages, stages: [{step: 0, value: 0.0}, {step: 4, value: 1.0}]}},"
    " {name: gan, layers: 2, width: 8, r1_interval: 2, warmup: 1, weight: {kind: ramp, value: 0.1, warmup: 1,"
    " ramp_end: 5}}]",
]


def _state(run: Path) -> dict:
    ck = read_checkpoint(run)
    return {"model": ck["model"], "ema": ck["ema"], "state": ck["state"]}


def _equal(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_exact_resume_with_stages_and_gan(tmp_path: Path) -> None:
    data = _images(tmp_path / "imgs")
    common = [*STAGED_GAN, f"data.train={data}", f"data.val={data}", "train.ckpt_every=3"]
    straight = load_config("demo", [*common, "train.steps=6"])
    Trainer(straight, tmp_path / "a", progress=False).fit()
    first = load_config("demo", [*common, "train.steps=6"])

    class Crash(Exception):
        pass

    class CrashAt3(Trainer):
        def train_step(self, step: int):  # type: ignore[no-untyped-def]
            if step == 3:  # dies right after the step-3 checkpoint, as a killed job would
                raise Crash
            return super().train_step(step)

    with pytest.raises(Crash):
        CrashAt3(first, tmp_path / "b", progress=False).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_0000003"]
    Trainer(first, tmp_path / "b", resume=True, progress=False).fit()
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a["state"]["step"] == b["state"]["step"] == 6
    _equal(a["model"], b["model"], "model")
    _equal(a["ema"], b["ema"], "ema")
    _equal(a["state"]["optimizer"], b["state"]["optimizer"], "optimizer")
    _equal(a["state"]["scheduler"], b["state"]["scheduler"], "scheduler")
    _equal(a["state"]["stack"], b["state"]["stack"], "stack (discriminator)")
    assert any("gan" in k for k in a["state"]["stack"])


@pytest.mark.parametrize("preset", ["demo", "edsr"])
def test_diffsr_train_takes_a_one_axis_slice_profile_config(tmp_path: Path, preset: str) -> None:
    # axial slices of a volume, degraded along their rows by a Gaussian profile, factor 4.8
    import nibabel as nib

    from diffsr.sampling.infer import load_model

    rng = np.random.default_rng(0)
    vol = np.kron(rng.random((6, 6, 4)), np.ones((8, 8, 1))).astype(np.float32) * 1000
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    sets = [*TINY, "train.steps=2", "data.scale=1", "data.degradation.name=slice_profile",
            "data.degradation.factor=4.8", "data.degradation.thickness=3.8", f"data.train={tmp_path / 'v.nii.gz'}",
            "data.val_fraction=0.25", "train.val_every=2", "data.val_images=1"]
    if preset == "edsr":
        sets = [s for s in sets if not s.startswith(("net.", "process.", "sample."))]
    cfg = load_config(preset, sets)
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert result.step == 2 and "val/psnr" in result.val
    loaded = load_model(tmp_path / "run", device="cpu")
    assert loaded.scale == 1 and loaded.config.data.degradation.factor == 4.8
    from diffsr.data.datasets import build_datasets

    train, val = build_datasets(cfg.data)
    item = train[0]  # the LR lies on the HR grid: the thick slices interpolated back
    assert item["hr"].shape == item["lr"].shape == item["lr_up"].shape == (1, 32, 32)
    assert len(val) >= 1
