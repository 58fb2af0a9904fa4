"""One-step distillation: the student's training forward IS the one-step sampler, the student
starts at the teacher, trains, and leaves an ordinary checkpoint that samples with one step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.config import load_config
from diffsr.core.errors import ConfigError, DiffsrError
from diffsr.data.degrade import bicubic_down, upsample
from diffsr.model import build_model
from diffsr.sampling.infer import load_model, super_resolve
from diffsr.train.distill import OneStepTrainer, distill, one_step_x0, run_distill_cli, student_config
from diffsr.train.trainer import Trainer, trainable_state

TINY = [
    "data.patch_size=32", "data.batch_size=2", "net.width=16", "net.channel_mult=[1,2]",
    "train.log_every=1", "train.threads=2", "train.time_limit=null", "train.warmup_steps=1",
    "data.val_images=1",
]
PROCESSES = {
    "flow": "process={name: flow, shift: 2.0}",
    "ddpm": "process={name: ddpm, train_steps: 50, prediction: v}",
    "resshift": "process={name: resshift, steps: 4, kappa: 1.0, min_noise: 0.2}",
    "rddm": "process={name: rddm, steps: 4, prediction: res_noise}",
}


@pytest.mark.parametrize("codec", ["pixel", "wavelet"])
@pytest.mark.parametrize("process", list(PROCESSES))
def test_one_step_forward_is_the_one_step_sampler(process: str, codec: str) -> None:
    codec_set = "codec={name: pixel}" if codec == "pixel" else "codec={name: wavelet, levels: 1, layout: full}"
    cfg = load_config("demo", [*TINY, PROCESSES[process], codec_set])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.net.out_conv.weight.normal_(0, 0.05)
    lr_up = upsample(torch.rand(2, 1, 6, 8, generator=torch.Generator().manual_seed(1)), 4)
    zc = model.codec.encode(lr_up)
    noise = torch.randn(zc.z.shape, generator=torch.Generator().manual_seed(2))
    z0_hat, _, t, _ = one_step_x0(model, zc, noise)
    lo, hi = model.process.t_range
    assert torch.all(t == hi) or (process == "flow" and torch.all(t == 1.0))
    mine = model.codec.decode(zc.with_z(z0_hat)).clamp(0, 1)
    sampled = model.sample(lr_up, steps=1, noise=noise)
    torch.testing.assert_close(mine, sampled, rtol=0, atol=1e-6)
    # and it is differentiable in the net's weights
    (grad,) = torch.autograd.grad(z0_hat.square().mean(), model.net.out_conv.weight)
    assert grad.abs().sum() > 0


def test_student_config() -> None:
    teacher = load_config("demo", TINY)
    cfg = student_config(teacher, 7, loss="l2", lr=1e-4, overrides=["train.ema_decay=0.9"])
    assert cfg.sample.steps == 1 and cfg.train.steps == 7 and cfg.train.lr == 1e-4
    assert cfg.train.ema_decay == 0.9 and cfg.train.time_limit is None
    assert [t.name for t in cfg.losses.terms] == ["l2"] and cfg.losses.diffusion_weight == 0
    assert cfg.process == teacher.process and cfg.codec == teacher.codec and cfg.net == teacher.net
    assert cfg.name == "demo-1step"
    with pytest.raises(ConfigError, match="student config"):
        student_config(teacher, 5, overrides=["train.lrr=1"])
    with pytest.raises(ConfigError, match="--loss"):
        student_config(teacher, 5, loss="l3")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    cfg = load_config("demo", [*TINY, "train.steps=3", "train.ckpt_every=3", "sample.steps=3",
                               "process={name: resshift, steps: 4, kappa: 1.0, min_noise: 0.2}"])
    Trainer(cfg, run, progress=False).fit()
    return run


def test_student_starts_at_the_teacher(teacher_run: Path, tmp_path: Path) -> None:
    teacher = load_model(teacher_run, device="cpu")
    cfg = student_config(teacher.config, 2)
    trainer = OneStepTrainer(cfg, tmp_path / "s", teacher.model, progress=False)
    trainer._setup()
    want = trainable_state(teacher.model)
    got = trainable_state(trainer.raw_model)
    assert set(want) == set(got)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    # the teacher is frozen and shares nothing with the student
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    assert trainer.raw_model.net.out_conv.weight.data_ptr() != trainer.teacher.net.out_conv.weight.data_ptr()


@pytest.mark.parametrize("target", ["hr", "teacher"])
def test_distill_end_to_end(teacher_run: Path, tmp_path: Path, target: str) -> None:
    out = tmp_path / "student"
    result = distill(teacher_run, out, 3, target=target, teacher_steps=2, lr=1e-3,  # type: ignore[arg-type]
                     overrides=["train.ckpt_every=3"])
    assert result.step == 3 and result.checkpoint is not None
    terms = result.last_report["terms"]
    assert terms["l1"]["raw"] > 0 and "diffusion" in terms
    student = load_model(out, device="cpu")
    teacher = load_model(teacher_run, device="cpu")
    assert student.config.sample.steps == 1 and student.config.process == teacher.config.process
    moved = [k for k, v in trainable_state(student.model).items()
             if not torch.equal(v, trainable_state(teacher.model)[k])]
    assert moved, "the student did not train"
    hr = torch.nn.functional.interpolate(torch.rand(1, 1, 4, 4), size=(32, 24), mode="bilinear")
    lr = bicubic_down(hr, 4)
    sr = super_resolve(student, lr)  # default steps: 1
    assert sr.shape == (1, 1, 32, 24)
    torch.testing.assert_close(sr, super_resolve(student, lr, steps=1), rtol=0, atol=0)


def test_cli_errors(teacher_run: Path, tmp_path: Path) -> None:
    with pytest.raises(DiffsrError, match="no such run"):
        run_distill_cli(tmp_path / "missing", tmp_path / "o", 2)
    with pytest.raises(DiffsrError, match="already holds checkpoints"):
        run_distill_cli(teacher_run, teacher_run, 2)
    with pytest.raises(DiffsrError, match="--target"):
        run_distill_cli(teacher_run, tmp_path / "o", 2, target="both")
