"""NaN/Inf in a batch, in one loss term or in the gradients: skipped, counted, never learned.

Policies (``losses.nonfinite.policy``): ``skip_term`` drops the bad term for the step (the step
is skipped when nothing finite is left), ``skip_step`` skips the whole step, ``stop`` ends the
run. Any policy ends the run after ``max_consecutive`` bad steps. Every test checks, after every
step, that no parameter or EMA weight is non-finite; skipped steps must leave the weights and
the optimiser's moments bit-identical; stopped runs leave a checkpoint that loads and resumes.
The reference for a dropped term is a run where that term contributes exactly zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from diffsr.config import load_config
from diffsr.core.errors import DiffsrError
from diffsr.train.checkpoint import list_checkpoints, read_checkpoint
from diffsr.train.trainer import Trainer

TINY = [
    "data.patch_size=32", "data.batch_size=4", "net.width=16", "net.channel_mult=[1,2]",
    "train.log_every=1", "train.threads=1", "train.time_limit=null", "train.warmup_steps=0",
    "sample.steps=2", "process.steps=2", "train.audit=false", "train.ckpt_every=1000",
    "losses.terms=[{name: l1, weight: {kind: constant, value: 0.5}}]",
]


def _cfg(steps: int, *extra: str) -> Any:
    return load_config("demo", [*TINY, f"train.steps={steps}", *extra])


class ScaledTerm(nn.Module):
    """Wraps a term: multiplies its per-sample loss by ``factor`` on chosen steps (NaN, 0, ...)."""

    def __init__(self, inner: nn.Module, steps: set[int], factor: float) -> None:
        super().__init__()
        self.inner, self.steps, self.factor, self.step = inner, steps, factor, 0

    def set_step(self, step: int) -> None:  # the loss stack calls this before each forward
        self.step = step

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        loss = self.inner(pred, target, mask)
        return loss * self.factor if self.step in self.steps else loss


class Probe(Trainer):
    """A Trainer that injects faults and checks the weights after every step.

    ``nan_batch``: steps whose HR batch is NaN. ``term``: (steps, factor) applied to the l1
    term. ``nan_grad``: steps whose gradient of the first parameter is NaN.
    """

    def __init__(self, *args: Any, nan_batch: set[int] = frozenset(), term: tuple[set[int], float] | None = None,
                 nan_grad: set[int] = frozenset(), **kwargs: Any) -> None:
        super().__init__(*args, progress=False, **kwargs)
        self.nan_batch, self.term, self.nan_grad = set(nan_batch), term, set(nan_grad)
        self.history: list[dict[str, Any]] = []

    def _setup(self) -> None:
        super()._setup()
        if self.term is not None:
            steps, factor = self.term
            (l1,) = [t for t in self.stack.terms if t.key == "l1"]
            l1.module = ScaledTerm(l1.module, steps, factor)
            self.stack.term_modules["l1"] = l1.module
        if self.nan_grad:
            first = next(p for p in self.raw_model.parameters() if p.requires_grad)
            first.register_hook(lambda g: g * float("nan") if self.step in self.nan_grad else g)

    def _batch(self, step: int) -> dict[str, Tensor]:
        batch = super()._batch(step)
        if step in self.nan_batch:
            batch["hr"] = torch.full_like(batch["hr"], float("nan"))
        return batch

    def train_step(self, step: int) -> tuple[Any, float, bool]:
        before = _weights(self)
        report, grad_norm, applied = super().train_step(step)
        after = _weights(self)
        for name, value in after.items():
            assert torch.isfinite(value).all(), f"step {step}: {name} became non-finite"
        self.history.append({"step": step, "applied": applied, "before": before, "after": after, "report": report})
        return report, grad_norm, applied


def _weights(trainer: Trainer) -> dict[str, Tensor]:
    out = {f"model.{k}": v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
    if trainer.ema is not None:
        out.update({f"ema.{k}": v.detach().clone() for k, v in trainer.ema.shadow.state_dict().items()})
    for i, state in enumerate(trainer.optimizer.state_dict()["state"].values()):
        out.update({f"adam.{i}.{k}": v.clone() for k, v in state.items() if isinstance(v, Tensor) and v.ndim})
    return out


def _same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _scalars(run: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_nan_batch_skips_the_step_and_counts_it(tmp_path: Path) -> None:
    trainer = Probe(_cfg(4), tmp_path / "run", nan_batch={1, 2})
    result = trainer.fit()
    applied = [h["applied"] for h in trainer.history]
    assert applied == [True, False, False, True]
    for h in trainer.history[1:3]:  # nothing learned from a NaN batch: weights, EMA, Adam untouched
        assert _same(h["before"], h["after"])
        assert h["report"].nonfinite == 2  # the diffusion term and l1 both dropped
        assert all(r.skipped for r in h["report"].terms.values())
    assert not _same(trainer.history[3]["before"], trainer.history[3]["after"])
    assert result.skipped_steps == 2 and result.nonfinite_terms == 4
    assert _scalars(tmp_path / "run", "train/skipped_steps") == {0: 0.0, 1: 1.0, 2: 2.0, 3: 2.0}
    assert _scalars(tmp_path / "run", "train/nonfinite_terms")[3] == 4.0
    meta = read_checkpoint(tmp_path / "run")["meta"]
    assert meta["skipped_steps"] == 2 and meta["nonfinite_terms"] == 4
    # and per term: both terms were dropped at steps 1 and 2
    assert meta["term_skips"] == {"diffusion": 2, "l1": 2}
    assert _scalars(tmp_path / "run", "skipped/l1") == {0: 0.0, 1: 1.0, 2: 2.0, 3: 2.0}


def test_nan_term_is_dropped_like_a_zero_term(tmp_path: Path) -> None:
    dropped = Probe(_cfg(3), tmp_path / "nan", term=({1}, float("nan")))
    result = dropped.fit()
    zero = Probe(_cfg(3), tmp_path / "zero", term=({1}, 0.0))
    zero.fit()
    report = dropped.history[1]["report"]
    assert report.nonfinite == 1 and report.terms["l1"].skipped and not report.terms["diffusion"].skipped
    assert report.terms["l1"].weighted == 0.0
    assert [h["applied"] for h in dropped.history] == [True, True, True]
    assert result.skipped_steps == 0 and result.nonfinite_terms == 1
    assert dropped.term_skips == {"l1": 1}
    a, b = dropped.history[-1]["after"], zero.history[-1]["after"]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_skip_step_policy_skips_the_whole_step(tmp_path: Path) -> None:
    trainer = Probe(_cfg(3, "losses.nonfinite.policy=skip_step"), tmp_path / "run", term=({1}, float("inf")))
    result = trainer.fit()
    assert [h["applied"] for h in trainer.history] == [True, False, True]
    assert _same(trainer.history[1]["before"], trainer.history[1]["after"])
    assert trainer.history[1]["report"].skip_step
    assert result.skipped_steps == 1


def test_nan_gradient_skips_the_step(tmp_path: Path) -> None:
    trainer = Probe(_cfg(4), tmp_path / "run", nan_grad={2})
    result = trainer.fit()
    assert [h["applied"] for h in trainer.history] == [True, True, False, True]
    assert _same(trainer.history[2]["before"], trainer.history[2]["after"])
    assert trainer.history[2]["report"].nonfinite == 0  # the loss was fine: only the gradient
    assert result.skipped_steps == 1
    assert _scalars(tmp_path / "run", "train/skipped_steps")[2] == 1.0


def _resumes(run: Path, steps: int) -> None:
    result = Trainer(_cfg(steps), run, resume=True, progress=False).fit()
    assert result.step == steps and result.skipped_steps >= 0
    assert all(torch.isfinite(v).all() for v in read_checkpoint(run)["model"].values())


def test_stop_policy_saves_a_checkpoint_and_raises(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = Probe(_cfg(6, "losses.nonfinite.policy=stop"), run, term=({2}, float("nan")))
    with pytest.raises(DiffsrError, match=r"non-finite loss in term\(s\) l1 at step 2.*saved to") as info:
        trainer.fit()
    assert "\n" not in str(info.value)
    (ckpt,) = list_checkpoints(run)
    assert ckpt.name == "step_0000002"
    saved = read_checkpoint(ckpt)
    last_good = trainer.history[-1]["after"]  # the weights after step 1
    assert all(torch.equal(v, last_good[f"model.{k}"]) for k, v in saved["model"].items())
    _resumes(run, 4)


def test_max_consecutive_bad_gradients_stop_with_a_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = Probe(_cfg(20, "losses.nonfinite.max_consecutive=3"), run, nan_grad=set(range(2, 20)))
    with pytest.raises(DiffsrError, match="3 consecutive steps .*saved to"):
        trainer.fit()
    assert [h["applied"] for h in trainer.history] == [True, True, False, False, False]
    (ckpt,) = list_checkpoints(run)
    saved = read_checkpoint(ckpt)
    assert saved["state"]["step"] == 5 and saved["meta"]["skipped_steps"] == 3
    last_good = trainer.history[1]["after"]
    assert all(torch.equal(v, last_good[f"model.{k}"]) for k, v in saved["model"].items())
    assert all(torch.equal(v, last_good[f"ema.{k}"]) for k, v in saved["ema"].items())
    _resumes(run, 7)


def test_max_consecutive_dropped_terms_stop_with_a_checkpoint(tmp_path: Path) -> None:
    """All terms NaN every step (a broken data source): the loss stack's own counter stops the run."""
    run = tmp_path / "run"
    trainer = Probe(_cfg(20, "losses.nonfinite.max_consecutive=2"), run, nan_batch=set(range(1, 20)))
    with pytest.raises(DiffsrError, match="2 consecutive steps.*saved to"):
        trainer.fit()
    (ckpt,) = list_checkpoints(run)
    saved = read_checkpoint(ckpt)
    assert all(torch.equal(v, trainer.history[0]["after"][f"model.{k}"]) for k, v in saved["model"].items())


def test_divergence_through_the_cli_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A learning rate of 1e30 blows the activations up: exit 2, one line, a checkpoint left."""
    from diffsr.cli import main

    argv = ["train", "demo", "--out", str(tmp_path / "run"), "--no-progress"]
    for item in [*TINY, "train.steps=30", "train.lr=1e30", "losses.nonfinite.max_consecutive=2"]:
        argv += ["--set", item]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "non-finite" in lines[0] and "saved to" in lines[0], err
    assert "Traceback" not in err
    saved = read_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_bad_step_streak_and_term_counts_survive_a_resume(tmp_path: Path) -> None:
    # steps 2 and 3 are bad, the run stops after step 4 (a checkpoint there); the resumed run's
    # bad step 4 is then the third in a row: with max_consecutive 3 it must stop at once
    first = Probe(_cfg(4, "train.ckpt_every=1"), tmp_path / "run", nan_batch={2, 3})
    first.fit()
    assert first.bad_streak == 2 and first.term_skips == {"diffusion": 2, "l1": 2}
    again = Probe(_cfg(6, "train.ckpt_every=1", "losses.nonfinite.max_consecutive=3"), tmp_path / "run",
                  resume=True, nan_batch={4})
    with pytest.raises(DiffsrError, match="3 consecutive"):
        again.fit()
    assert again.term_skips == {"diffusion": 3, "l1": 3}


def test_a_diverging_run_prints_one_error_line_and_no_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Issue 18: with the default max_consecutive (20) the run used to print 19 warnings before its error."""
    from diffsr.cli import main

    argv = ["train", "demo", "--out", str(tmp_path / "run"), "--no-progress"]
    for item in [*TINY, "train.steps=40", "train.lr=1e30"]:
        argv += ["--set", item]
    caplog.set_level("WARNING")
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= 30 and "non-finite" in r.getMessage()]
    err = capsys.readouterr().err.strip()
    assert warnings == [] and len(err.splitlines()) == 1, (warnings, err)
    assert "20 consecutive steps" in err


def test_a_streak_that_ends_is_one_warning_naming_its_steps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    Probe(_cfg(5), tmp_path / "run", term=({1, 2}, float("nan"))).fit()
    notes = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert notes == ["steps 1-2: non-finite loss in l1 (2 step(s), terms dropped)"]
    caplog.clear()
    Probe(_cfg(3), tmp_path / "end", term=({2}, float("nan"))).fit()  # the run ends inside the streak
    assert [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()] == [
        "steps 2-2: non-finite loss in l1 (1 step(s), terms dropped)"]
