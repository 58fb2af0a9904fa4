"""Crash safety: SIGKILL a training process while it writes checkpoints, again and again.

A child process trains the tiny demo with a checkpoint every step (keep_last 2) and resumes
from the newest checkpoint each time it starts. The test kills it 12 times - half of them the
moment a temporary checkpoint folder appears (mid-write), half after increasing delays - and
after every kill checks that:

- every checkpoint that is listed is complete and loads (``read_checkpoint``), the newest one
  through ``infer.load_model`` too; temporary folders are never listed;
- at most keep_last + 1 complete checkpoints exist (the +1: killed between rename and prune),
  and they are the newest steps;
- training makes progress across kills (each child resumes where the last one stopped).

At the end a clean run resumes from the newest checkpoint, trains further, and leaves exactly
the last 2 checkpoints and no temporary folders. Children are forked from a forkserver that has
torch and diffsr imported already, so a restart costs the trainer's set-up, not an interpreter.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from diffsr.config import load_config
from diffsr.core.errors import CheckpointError
from diffsr.train.checkpoint import FILES, list_checkpoints, read_checkpoint, save_checkpoint

KEEP = 2
KILLS = 12
# imported once by the forkserver; torch._dynamo alone takes seconds (the optimiser imports it)
PRELOAD = ["torch", "torch._dynamo", "torch.utils.tensorboard", "accelerate", "diffsr.train.trainer",
           "diffsr.data.datasets", "diffsr.losses", "diffsr.codecs", "diffsr.nets", "diffsr.processes"]
FOREVER = [
    "data.patch_size=32", "data.batch_size=4", "net.width=16", "net.channel_mult=[1,2]",
    "train.log_every=1000", "train.threads=1", "train.time_limit=null", "train.warmup_steps=2",
    "sample.steps=2", "process.steps=2", "train.audit=false", "train.steps=100000",
    "train.ckpt_every=1", f"train.keep_last={KEEP}",
]


def _train_forever(run: str) -> None:
    """The child: resume from the newest checkpoint and train (checkpoint every step) until killed."""
    from diffsr.train.trainer import Trainer

    Trainer(load_config("demo", FOREVER), run, resume=True, progress=False).fit()


def _step(path: Path) -> int:
    return int(path.name.rsplit("_", 1)[1])


def _wait_for(predicate: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.001)
    return False


def _check_after_kill(run: Path, previous: int) -> int:
    from diffsr.sampling.infer import load_model

    found = list_checkpoints(run)
    root = run / "checkpoints"
    for entry in root.iterdir() if root.is_dir() else []:
        if entry.name.startswith("step_"):  # a step folder only ever appears complete (renamed)
            assert all((entry / f).is_file() for f in FILES), f"partial checkpoint {entry}"
    assert all(not p.name.startswith(".tmp-") for p in found)
    if not found:
        assert previous < 0, "checkpoints disappeared"
        return previous
    steps = [_step(p) for p in found]
    assert len(found) <= KEEP + 1, steps
    assert steps == list(range(steps[0], steps[-1] + 1)), steps  # the newest, consecutive
    assert steps[-1] >= previous
    for path in found:
        ckpt = read_checkpoint(path)
        assert ckpt["state"]["step"] == ckpt["meta"]["step"] == _step(path)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    loaded = load_model(run, device="cpu")
    assert loaded.step == steps[-1] and loaded.checkpoint == found[-1]
    return steps[-1]


def test_sigkill_while_checkpointing(tmp_path: Path) -> None:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    run = tmp_path / "run"
    root = run / "checkpoints"
    newest, mid_write = -1, 0
    for kill in range(KILLS):
        child = ctx.Process(target=_train_forever, args=(str(run),), daemon=True)
        child.start()
        target = newest + 1

        def progressed(target: int = target) -> bool:
            done = list_checkpoints(run)
            return bool(done) and _step(done[-1]) >= target

        assert _wait_for(progressed, 60), "the child made no checkpoint"
        if kill % 2:  # the instant a checkpoint is being written
            assert _wait_for(lambda: any(root.glob(".tmp-step_*")), 30)
            time.sleep(0.002 * (kill // 2))
        else:  # after an increasing delay
            time.sleep(0.03 * kill)
        mid_write += any(root.glob(".tmp-step_*"))
        child.kill()
        child.join(30)
        assert child.exitcode == -9
        newest = _check_after_kill(run, newest)
    assert mid_write >= KILLS // 2, "too few kills landed during a checkpoint write"
    assert newest >= KILLS  # progress: every child added at least one step

    # a clean resume goes on from the newest step, then keeps exactly the last KEEP checkpoints
    from diffsr.train.trainer import Trainer

    threads = torch.get_num_threads()
    try:
        more = load_config("demo", [*FOREVER, f"train.steps={newest + 3}"])
        result = Trainer(more, run, resume=True, progress=False).fit()
    finally:
        torch.set_num_threads(threads)
    assert result.step == newest + 3
    assert [_step(p) for p in list_checkpoints(run)] == [newest + 2, newest + 3]
    assert sorted(p.name for p in root.iterdir()) == [p.name for p in list_checkpoints(run)]  # no leftovers


def _save(run: Path, step: int, keep: int = KEEP) -> Path:
    weights = {"w": torch.full((2,), float(step))}
    return save_checkpoint(run, step, model=weights, ema=None, state={"step": step}, config_yaml="name: x\n",
                           meta={}, keep_last=keep)


def test_kill_between_the_renames_of_a_resave(tmp_path: Path) -> None:
    """Re-saving a step swaps folders with two renames; a kill between them loses nothing."""
    _save(tmp_path, 4, keep=1)
    root = tmp_path / "checkpoints"
    # the state a kill leaves after os.replace(final, old) and before os.replace(tmp, final)
    os.replace(root / "step_0000004", root / ".old-step_0000004")
    shutil.copytree(root / ".old-step_0000004", root / ".tmp-step_0000004-x")
    found = list_checkpoints(tmp_path)
    assert [p.name for p in found] == [".old-step_0000004"]  # keep_last=1: the only copy
    assert float(read_checkpoint(tmp_path)["model"]["w"][0]) == 4.0
    _save(tmp_path, 5, keep=1)  # the next save restores nothing stale and prunes it all
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000005"]
    assert sorted(p.name for p in root.iterdir()) == ["step_0000005"]


def test_partial_step_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    fake = tmp_path / "checkpoints" / "step_0000009"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"\x00" * 10)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000001"]
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_checkpoint(fake)  # asked for by name: a one-line refusal, not a traceback
