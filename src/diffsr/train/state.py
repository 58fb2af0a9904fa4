"""A training run's resumable state: what a checkpoint holds, and putting it back.

A checkpoint (:mod:`diffsr.train.checkpoint`) holds the trainable weights and their EMA
(safetensors), and ``state.pt``: the step, the optimiser, the LR schedule, the loss stack's
state (a GAN discriminator and its optimiser), the fp16 loss scale and the run's counters
(skipped steps, NaN/Inf drops per term, the bad-step streak), so that a resumed run continues
exactly where the interrupted one stopped. Weights are restored before the model is sharded
and before the optimiser exists; optimiser state after.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffsr.core.errors import CheckpointError
from diffsr.model import load_trainable_state, plain_key, trainable_state
from diffsr.train.checkpoint import list_checkpoints, read_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from diffsr.train.trainer import Trainer

log = logging.getLogger(__name__)

__all__ = ["check_resumable", "read_latest", "restore_optimizer", "restore_weights", "save_training_checkpoint",
           "stack_state"]


def stack_state(stack: torch.nn.Module) -> dict[str, Any]:
    """The loss stack's resumable state (discriminators, their optimisers), without frozen networks.

    Frozen term networks (LPIPS backbones, a user's feature network) are rebuilt from their
    weight files, so they are not copied into every checkpoint.
    """
    frozen = []
    for name, module in getattr(stack, "term_modules", {}).items():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            frozen.append(f"term_modules.{name}.")
    return {k: v for k, v in stack.state_dict().items() if not any(k.startswith(f) for f in frozen)}


def save_training_checkpoint(trainer: Trainer, report: Any = None) -> Path | None:
    """Write the trainer's checkpoint (main process only; every process when sharded); returns its folder."""
    trainer.accelerator.wait_for_everyone()
    main = trainer.accelerator.is_main_process
    if not (main or trainer.sharded):  # sharded: every process takes part in gathering the state
        return None
    model_state = trainable_state(trainer.raw_model)
    ema_state = trainable_state(trainer.ema.shadow) if trainer.ema is not None else None
    optimizer_state = trainer.optimizer.state_dict()
    if trainer.sharded:  # full tensors, the layout of unsharded training (collective: every process);
        # gathered one at a time and kept, on the CPU, by the main process only
        from diffsr.train.sharding import full_tensors

        model_state, ema_state, optimizer_state = full_tensors(
            (model_state, ema_state, optimizer_state), keep=main)
    if not main:
        return None
    state = {
        "step": trainer.step,
        "optimizer": optimizer_state,
        "scheduler": trainer.scheduler.state_dict(),
        "stack": stack_state(trainer.stack),
        "ema_updates": trainer.ema.updates if trainer.ema is not None else 0,
        "skipped": trainer.skipped,
        "nonfinite_terms": trainer.nonfinite_terms,
        "term_skips": dict(trainer.term_skips),
        "bad_streak": trainer.bad_streak,  # consecutive bad steps count across a resume
        "train_seconds": trainer.train_seconds,  # wall time of every session of the run so far
    }
    scaler = getattr(trainer.accelerator, "scaler", None)
    if scaler is not None:  # fp16: resume with the same loss scale, not the initial one
        state["scaler"] = scaler.state_dict()
    meta = {
        "report": report_dict(report),
        "skipped_steps": trainer.skipped,
        "nonfinite_terms": trainer.nonfinite_terms,
        "term_skips": dict(trainer.term_skips),
        "skipped_discriminator_steps": trainer.skipped_discriminator,
        "train_seconds": trainer.train_seconds,
        "val": dict(getattr(trainer, "_val", None) or {}),  # the last validation (model cards show it)
        "diffsr_version": _version(),
    }
    return save_checkpoint(
        trainer.run_dir,
        trainer.step,
        model=model_state,
        ema=ema_state,
        state=state,
        config_yaml=trainer.config.to_yaml(),
        meta=meta,
        keep_last=trainer.config.train.keep_last,
    )


def read_latest(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint of a run and its contents (None: the run has none)."""
    found = list_checkpoints(run_dir)
    if not found:
        return None
    ckpt = read_checkpoint(found[-1])
    state = ckpt["state"]
    need = ("step", "optimizer", "scheduler")
    if not isinstance(state, dict) or any(k not in state for k in need):
        raise CheckpointError(f"{found[-1]}/state.pt: not a diffsr training state (needs {', '.join(need)})")
    return found[-1], ckpt


#: config sections whose change makes a checkpoint's weights mean something else
RESUME_KEYS = ("data.scale", "data.channels", "codec", "net", "process")


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def check_resumable(path: Path, ckpt: dict[str, Any], config: Any) -> None:
    """CheckpointError (one line naming the key) when ``config`` differs from the checkpoint's own
    config.yaml in :data:`RESUME_KEYS`: resuming would train the weights as another model."""

    from diffsr.config import load_saved_config, saved_config_mapping

    raw = saved_config_mapping(ckpt["config_yaml"], f"{path}/config.yaml")
    saved = load_saved_config(raw, f"{path}/config.yaml").model_dump(mode="json")
    now = config.model_dump(mode="json")
    for key in RESUME_KEYS:
        section, _, field = key.partition(".")
        old = _flat(saved[section][field] if field else saved[section], key)
        new = _flat(now[section][field] if field else now[section], key)
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                raise CheckpointError(
                    f"--resume: {name} is {new.get(name)!r}, but the run in {path.parent.parent} was trained with "
                    f"{old.get(name)!r}; resume with the run's config (its config.yaml) or train into a new --out")


def restore_weights(trainer: Trainer, ckpt: dict[str, Any], path: Path | None = None) -> None:
    """Model and EMA weights, step and counters (before sharding and before the optimiser exists)."""
    try:
        load_trainable_state(trainer.raw_model, ckpt["model"])
    except CheckpointError as err:  # the config matched (check_resumable): the weights do not fit it
        raise CheckpointError(f"{path or trainer.run_dir}: the weights do not match the checkpoint's own "
                              f"config.yaml: {err}") from None
    if trainer.ema is not None and ckpt["ema"] is not None:
        ema_state = {plain_key(k): v for k, v in ckpt["ema"].items()}  # an old compiled run's keys
        trainer.ema.load_state_dict({**trainer.ema.shadow.state_dict(), **ema_state})
    state = ckpt["state"]
    if trainer.ema is not None:
        trainer.ema.updates = int(state.get("ema_updates", 0))
    trainer.step = int(state["step"])
    trainer.skipped = int(state.get("skipped", 0))
    trainer.nonfinite_terms = int(state.get("nonfinite_terms", 0))
    trainer.term_skips = {str(k): int(v) for k, v in dict(state.get("term_skips", {})).items()}
    trainer.bad_streak = int(state.get("bad_streak", 0))
    trainer.seconds_before = float(state.get("train_seconds", 0.0))


def restore_optimizer(trainer: Trainer, path: Path, ckpt: dict[str, Any]) -> None:
    """Optimiser, LR schedule, loss scale and loss-stack state (after the optimiser exists)."""
    state = ckpt["state"]
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:  # torch's message for another model / config
        raise CheckpointError(
            f"{path}/state.pt: the optimiser state does not fit this model ({str(err).splitlines()[0]})"
        ) from None
    if trainer.sharded:
        from diffsr.train.sharding import shard_optimizer_state

        shard_optimizer_state(getattr(trainer.optimizer, "optimizer", trainer.optimizer))
    trainer.scheduler.load_state_dict(state["scheduler"])
    scaler = getattr(trainer.accelerator, "scaler", None)
    if scaler is not None and state.get("scaler"):  # fp16: the loss scale and its growth tracker
        scaler.load_state_dict(state["scaler"])
    if state.get("stack"):
        trainer.stack.load_state_dict(state["stack"], strict=False)
    for name, module in trainer.stack.named_modules():
        repair = getattr(module, "repair_nonfinite", None)
        if callable(repair) and repair():
            log.warning("%s/state.pt: NaN/Inf in the discriminator %s (weights or optimiser state): "
                        "re-initialised it", path, name)
    log.info("resumed from %s at step %d", path, trainer.step)


def report_dict(report: Any) -> dict[str, Any]:
    """A loss report as plain data ({} for none)."""
    if report is None:
        return {}
    to_dict = getattr(report, "to_dict", None)
    return to_dict() if callable(to_dict) else {}


def _version() -> str:
    from diffsr import __version__

    return __version__
