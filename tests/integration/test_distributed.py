"""Two CPU processes (torchrun + gloo) train exactly like one process with the same global batch.

The test launches this file under ``python -m torch.distributed.run --standalone
--nproc_per_node 2`` (``accelerate launch --cpu`` starts one process unless MPI is set up, so
torchrun is the robust CPU launcher; Accelerate picks the process group up from its
environment either way). The child part (``_child``, bottom) instruments the trainer from the
outside - counting checkpoint writes, TensorBoard writers and validation samples per rank - runs
the real ``diffsr train`` command, then a few Trainer scenarios; each rank writes ``rank<N>.json``.
One launch serves the whole module (interpreter start-up dominates its cost).

Checked against a one-process run in this interpreter (the independent reference):
- weights, EMA weights and optimiser moments equal to 1e-5, the same checkpoints;
- only rank 0 writes checkpoints, config and TensorBoard events; the CLI reports once;
- validation is sharded (each rank samples half the images) and gathered (both ranks see all);
- robustness: a time limit that one rank reaches first, NaN on one rank only (policy stop), and
  a GAN-like term with its own optimiser (its discriminator must stay identical on both ranks).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# threads=1: two processes on two cores; more threads per process thrash under contention
TINY = [
    "data.patch_size=32", "data.batch_size=4", "net.width=16", "net.channel_mult=[1,2]",
    "train.log_every=1", "train.threads=1", "train.time_limit=null", "train.warmup_steps=2",
    "sample.steps=2", "process.steps=2",
]
CLI_RUN = [*TINY, "train.steps=3", "train.ckpt_every=2", "train.val_every=3", "data.val_images=4"]
# the GAN term alone, every row at a random timestep (faithful_fraction 0, not the demo's 0.5: with
# it the one- and two-process weights differed by 1.1e-5 after 3 AdamW steps, the all-reduce's
# float summation order amplified by the rows' 1 / (1 - f) weights; tests/train covers the fraction)
GAN_RUN = [*TINY, "train.steps=3", "train.ckpt_every=100", "train.audit=false", "train.faithful_fraction=0",
           "losses.terms=[{name: gan, layers: 1, width: 8}]"]
FSDP_RUN = [*CLI_RUN, "train.shard=fsdp", "data.val_images=3"]
TOL = 1e-5


class FakeGAN(nn.Module):
    """A GAN-shaped term: per-sample generator loss, a discriminator with its own Adam.

    Stands in for the real PatchGAN so the test does not depend on its internals; what matters
    is the shape the trainer sees: a term module with an optimiser and ``discriminator_step``.
    """

    warmup = 0

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.disc = nn.Conv2d(channels, 1, 3, padding=1)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=1e-2)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return -self.disc(pred).flatten(1).mean(1)

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, step: int) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        loss = F.relu(1 - self.disc(real)).mean() + F.relu(1 + self.disc(fake)).mean()
        loss.backward()
        self.opt.step()
        return {"d_loss": float(loss.detach())}


def _gan_factory(original: Any) -> Any:
    """``build_term_module`` with 'gan' terms built as :class:`FakeGAN`."""

    def factory(cfg: Any, *, channels: int, codec: Any = None) -> nn.Module:
        if cfg.name == "gan":
            return FakeGAN(channels)
        return original(cfg, channels=channels, codec=codec)

    return factory


def _launch(out: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``_child(out, args)`` in two processes; kill them all if they hang."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts each worker in its own session: kill them by the pids they wrote
        for pid_file in out.glob("pid*"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=60)
        raise AssertionError(f"2-process run hung (killed after {timeout} s):\n{stdout[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, "")


def _ranks(out: Path) -> list[dict[str, Any]]:
    found = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [f["rank"] for f in found] == [0, 1]
    return found


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _flat_state(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a nested optimiser state dict, by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(_flat_state(v, f"{prefix}.{k}"))
    elif isinstance(state, list | tuple):
        for i, v in enumerate(state):
            out.update(_flat_state(v, f"{prefix}[{i}]"))
    return out


def _restore_threads() -> Any:
    threads = torch.get_num_threads()
    return lambda: torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict[str, Any]]]:
    """One 2-process launch for the whole module: ``diffsr train`` through the CLI, then the scenarios."""
    out = tmp_path_factory.mktemp("two")
    argv = ["train", "demo", "--out", str(out / "run"), "--no-progress"]
    for item in CLI_RUN:
        argv += ["--set", item]
    proc = _launch(out, argv)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return out, proc.stdout, _ranks(out)


def test_two_processes_match_one_process(two: tuple[Path, str, list[dict[str, Any]]], tmp_path: Path) -> None:
    from diffsr.config import load_config
    from diffsr.train.checkpoint import list_checkpoints, read_checkpoint
    from diffsr.train.trainer import Trainer

    out, stdout, ranks = two
    ranks = [r["cli"] for r in ranks]
    restore = _restore_threads()
    try:
        one = Trainer(load_config("demo", CLI_RUN), tmp_path / "one", progress=False).fit()
    finally:
        restore()

    # the same weights, EMA and optimiser moments as one process with the same global batch
    a, b = read_checkpoint(tmp_path / "one"), read_checkpoint(out / "run")
    assert a["state"]["step"] == b["state"]["step"] == 3
    assert _max_diff(a["model"], b["model"]) < TOL
    assert _max_diff(a["ema"], b["ema"]) < TOL
    assert _max_diff(_flat_state(a["state"]["optimizer"]), _flat_state(b["state"]["optimizer"])) < TOL
    assert [p.name for p in list_checkpoints(out / "run")] == [p.name for p in list_checkpoints(tmp_path / "one")]

    # only the main process writes checkpoints, config and logs; the CLI reports once
    assert ranks[0]["saves"] == 2 and ranks[1]["saves"] == 0
    assert ranks[0]["writers"] == 1 and ranks[1]["writers"] == 0
    assert len(list((out / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert stdout.count("trained 3 steps") == 1, stdout[-2000:]

    # validation: sharded (2 + 2 of the 4 images) and gathered (both ranks see all 4)
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["samples"] for r in ranks] == [2, 2]
    for r in ranks:
        assert r["val"]["val/images"] == 4
        assert abs(r["val"]["val/psnr"] - one.val["val/psnr"]) < 1e-4
        assert abs(r["val"]["val/psnr_bicubic"] - one.val["val/psnr_bicubic"]) < 1e-4


def test_two_process_robustness(two: tuple[Path, str, list[dict[str, Any]]], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Time limit reached by one rank first, NaN on one rank, a term with its own optimiser."""
    from diffsr.config import load_config
    from diffsr.train.checkpoint import list_checkpoints, read_checkpoint
    from diffsr.train.trainer import Trainer

    out, _, ranks = two

    # (a) rank 0 starts its clock 1.5 s earlier: both ranks must still stop at the same step
    steps = [r["time_limit_step"] for r in ranks]
    assert steps[0] == steps[1] and 1 <= steps[0] < 50, steps
    # (b) NaN in rank 1's batch, policy stop: both ranks stop (no hang), rank 0 saves the weights
    assert "non-finite" in ranks[1]["nan_error"]
    assert "another process" in ranks[0]["nan_error"] and "saved to" in ranks[0]["nan_error"]
    saved = list_checkpoints(out / "nan")
    assert [p.name for p in saved] == ["step_0000002"]
    assert all(torch.isfinite(v).all() for v in read_checkpoint(saved[-1])["model"].values())

    # (c) the discriminator trained on per-rank slices stays identical on both ranks and equal
    # to one process's (its optimiser's gradients are averaged too)
    disc = [torch.load(out / f"disc{r}.pt", weights_only=True) for r in (0, 1)]
    assert _max_diff(disc[0], disc[1]) == 0
    from diffsr.losses import build

    monkeypatch.setattr(build, "build_term_module", _gan_factory(build.build_term_module))
    restore = _restore_threads()
    try:
        trainer = Trainer(load_config("demo", GAN_RUN), tmp_path / "one", progress=False)
        trainer.fit()
    finally:
        restore()
    reference = {k: v.detach() for k, v in trainer.stack.term_modules["gan"].disc.state_dict().items()}
    assert _max_diff(reference, disc[0]) < TOL
    assert _max_diff(read_checkpoint(tmp_path / "one")["model"], read_checkpoint(out / "gan")["model"]) < TOL


def test_fsdp_matches_one_process_and_resumes_anywhere(two: tuple[Path, str, list[dict[str, Any]]],
                                                       tmp_path: Path) -> None:
    """train.shard=fsdp on 2 processes: sharded for real, equal to 1 process, exact resume, portable checkpoints."""
    import shutil

    from diffsr.config import load_config
    from diffsr.train.checkpoint import list_checkpoints, read_checkpoint
    from diffsr.train.trainer import Trainer

    out, _, ranks = two
    # most of the denoiser is sharded, and each rank holds half of it
    for r in ranks:
        assert r["fsdp_sharded"] > 0.9 * r["fsdp_net"], r
        assert abs(r["fsdp_local"] - r["fsdp_sharded"] / 2) <= 0.02 * r["fsdp_sharded"], r
    assert ranks[0]["fsdp_local"] + ranks[1]["fsdp_local"] == ranks[0]["fsdp_sharded"]

    restore = _restore_threads()
    try:
        trainer = Trainer(load_config("demo", [*CLI_RUN, "data.val_images=3"]), tmp_path / "one", progress=False)
        one = trainer.fit()
        # the sharded step-2 checkpoint, resumed by one unsharded process
        shutil.copytree(out / "fsdp_resume" / "checkpoints" / "step_0000002",
                        tmp_path / "cross" / "checkpoints" / "step_0000002")
        Trainer(load_config("demo", [*CLI_RUN, "data.val_images=3"]), tmp_path / "cross", resume=True,
                progress=False).fit()
    finally:
        restore()
    a, b = read_checkpoint(tmp_path / "one"), read_checkpoint(out / "fsdp")
    assert _max_diff(a["model"], b["model"]) < TOL
    assert _max_diff(a["ema"], b["ema"]) < TOL
    assert _max_diff(_flat_state(a["state"]["optimizer"]), _flat_state(b["state"]["optimizer"])) < TOL
    # validation: 2 + 1 images sampled, all 3 gathered, the same PSNR as one process
    for r in ranks:
        assert r["fsdp_val"]["val/images"] == 3
        assert abs(r["fsdp_val"]["val/psnr"] - one.val["val/psnr"]) < 1e-4
    # 2 steps, stop, resume: the same as 3 straight (same sharding: bitwise)
    c = read_checkpoint(out / "fsdp_resume")
    assert [p.name for p in list_checkpoints(out / "fsdp_resume")] == ["step_0000002", "step_0000003"]
    assert _max_diff(b["model"], c["model"]) == 0 and _max_diff(b["ema"], c["ema"]) == 0
    assert _max_diff(_flat_state(b["state"]["optimizer"]), _flat_state(c["state"]["optimizer"])) == 0
    # a sharded checkpoint resumes unsharded on one process: the same as one process throughout
    d = read_checkpoint(tmp_path / "cross")
    assert d["state"]["step"] == 3
    assert _max_diff(a["model"], d["model"]) < TOL and _max_diff(a["ema"], d["ema"]) < TOL


def test_accelerate_fsdp_configs_map_to_diffsr_sharding() -> None:
    """Accelerate's own FSDP plugin (as an fsdp.yaml builds it): strategy -> reshard_after_forward; the rest refused."""
    from accelerate.utils import FullyShardedDataParallelPlugin as Plugin

    from diffsr.core.errors import ConfigError
    from diffsr.train.trainer import accelerate_fsdp_reshard

    assert accelerate_fsdp_reshard(Plugin(fsdp_version=2)) is True
    assert accelerate_fsdp_reshard(Plugin(fsdp_version=2, reshard_after_forward=False)) is False
    assert accelerate_fsdp_reshard(Plugin(fsdp_version=1, reshard_after_forward="FULL_SHARD")) is True
    assert accelerate_fsdp_reshard(Plugin(fsdp_version=1, reshard_after_forward="SHARD_GRAD_OP")) is False
    with pytest.raises(ConfigError, match="HYBRID_SHARD"):
        accelerate_fsdp_reshard(Plugin(fsdp_version=1, reshard_after_forward="HYBRID_SHARD"))
    with pytest.raises(ConfigError, match="offload"):
        accelerate_fsdp_reshard(Plugin(fsdp_version=2, cpu_offload=True))


def test_accelerate_deepspeed_configs_map_to_diffsr_sharding() -> None:
    """Accelerate's DeepSpeed plugin (as a ds_config / accelerate yaml builds it): ZeRO stage -> sharding."""
    from accelerate.utils import DeepSpeedPlugin

    from diffsr.core.errors import ConfigError
    from diffsr.train.trainer import accelerate_deepspeed_reshard

    assert accelerate_deepspeed_reshard(DeepSpeedPlugin(zero_stage=1)) is False
    assert accelerate_deepspeed_reshard(DeepSpeedPlugin(zero_stage=2)) is False
    assert accelerate_deepspeed_reshard(DeepSpeedPlugin(zero_stage=3)) is True
    ds = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1}
    assert accelerate_deepspeed_reshard(DeepSpeedPlugin(hf_ds_config=ds)) is True
    with pytest.raises(ConfigError, match="stage 0"):
        accelerate_deepspeed_reshard(DeepSpeedPlugin(zero_stage=0))
    with pytest.raises(ConfigError, match="offload_param.device=cpu"):
        accelerate_deepspeed_reshard(DeepSpeedPlugin(zero_stage=3, offload_param_device="cpu"))


def test_the_real_gan_optimiser_is_found() -> None:
    """The PatchGAN term keeps its discriminator optimiser where the gradient averaging finds it."""
    pytest.importorskip("diffsr.losses.adversarial")
    from diffsr.config import load_config
    from diffsr.losses import build_loss_stack
    from diffsr.processes import build_process
    from diffsr.train.trainer import term_optimizers

    cfg = load_config("demo", ["losses.terms=[{name: l1}, {name: gan, layers: 1, width: 8}]"])
    stack = build_loss_stack(cfg.losses, channels=1)
    (optimizer,) = term_optimizers(stack)
    disc = {id(p) for p in stack.term_modules["gan"].parameters()}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == disc
    demo = load_config("demo")
    assert term_optimizers(build_loss_stack(demo.losses, channels=1, process=build_process(demo.process))) == []


# --------------------------------------------------------------------------- the child side


def _child(out: Path, args: list[str]) -> None:
    """Runs on every rank: instrument the trainer, run the CLI with ``args``, then the scenarios."""
    from diffsr import model as model_module
    from diffsr.train import state as state_module
    from diffsr.train import trainer as trainer_module

    rank = int(os.environ.get("RANK", "0"))
    (out / f"pid{rank}").write_text(str(os.getpid()))
    log: dict[str, Any] = {"rank": rank, "saves": 0, "samples": 0, "writers": 0}
    save_checkpoint = state_module.save_checkpoint

    def counting_save(*a: Any, **k: Any) -> Any:
        log["saves"] += 1
        return save_checkpoint(*a, **k)

    state_module.save_checkpoint = counting_save  # type: ignore[assignment]
    sample = model_module.SRModel.sample

    def counting_sample(self: Any, lr_up: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        log["samples"] += int(lr_up.shape[0])
        return sample(self, lr_up, *a, **k)

    model_module.SRModel.sample = counting_sample  # type: ignore[method-assign]
    import torch.utils.tensorboard as tb

    writer_cls = tb.SummaryWriter

    def counting_writer(*a: Any, **k: Any) -> Any:
        log["writers"] += 1
        return writer_cls(*a, **k)

    tb.SummaryWriter = counting_writer  # type: ignore[misc]
    validate = trainer_module.Trainer.validate

    def recording_validate(self: Any, *a: Any, **k: Any) -> dict[str, float]:
        result = validate(self, *a, **k)
        log["val"], log["world"] = result, self.world
        return result

    trainer_module.Trainer.validate = recording_validate  # type: ignore[method-assign]
    try:
        from diffsr.cli import main

        main(args)
        log["cli"] = dict(log)  # what the CLI run did, before the scenarios add to the counters
        _robust(out, rank, log)
    finally:
        (out / f"rank{rank}.json").write_text(json.dumps(log))


def _robust(out: Path, rank: int, log: dict[str, Any]) -> None:
    from diffsr.config import load_config
    from diffsr.losses.stack import NonFiniteError
    from diffsr.train.trainer import Trainer

    # (a) a time limit that rank 0 reaches first (its clock starts 1.5 s before rank 1's)
    class LateStart(Trainer):
        def _audit_reachability(self) -> None:
            super()._audit_reachability()
            if self.rank == 1:
                time.sleep(1.5)

    cfg = load_config("demo", [*TINY, "train.steps=50", "train.time_limit=0.5", "train.ckpt_every=1000"])
    log["time_limit_step"] = LateStart(cfg, out / "time", progress=False).fit().step

    # (b) NaN in rank 1's slice of step 2 with policy 'stop'
    class NaNOnRank1(Trainer):
        def _batch(self, step: int) -> dict[str, torch.Tensor]:
            batch = super()._batch(step)
            if self.rank == 1 and step == 2:
                batch["hr"] = batch["hr"] * float("nan")
            return batch

    cfg = load_config("demo", [*TINY, "train.steps=6", "train.ckpt_every=1000", "losses.nonfinite.policy=stop"])
    try:
        NaNOnRank1(cfg, out / "nan", progress=False).fit()
        log["nan_error"] = ""
    except NonFiniteError as err:
        log["nan_error"] = str(err)

    # (c) a term with its own optimiser, trained on each rank's slice
    from diffsr.losses import build

    build.build_term_module = _gan_factory(build.build_term_module)
    trainer = Trainer(load_config("demo", GAN_RUN), out / "gan", progress=False)
    trainer.fit()
    disc = trainer.stack.term_modules["gan"].disc.state_dict()
    torch.save({k: v.detach().clone() for k, v in disc.items()}, out / f"disc{rank}.pt")

    # (d) FSDP: the CLI run sharded (3 validation images: rank 1 has one fewer), straight, and
    # 2 steps + a resume to 3
    from torch.distributed.tensor import DTensor

    cfg = load_config("demo", FSDP_RUN)
    trainer = Trainer(cfg, out / "fsdp", progress=False)
    log["fsdp_val"] = trainer.fit().val
    sharded = [p for p in trainer.raw_model.net.parameters() if isinstance(p, DTensor)]
    log["fsdp_local"] = sum(p.to_local().numel() for p in sharded)
    log["fsdp_sharded"] = sum(p.numel() for p in sharded)
    log["fsdp_net"] = sum(p.numel() for p in trainer.raw_model.net.parameters())
    Trainer(cfg, out / "fsdp_resume", progress=False).fit(stop_after=2)
    Trainer(cfg, out / "fsdp_resume", resume=True, progress=False).fit()


if __name__ == "__main__":
    _child(Path(sys.argv[1]), sys.argv[2:])
