"""Crash-safe checkpoints.

A checkpoint is a folder ``<run>/checkpoints/step_XXXXXXX/`` holding

- ``model.safetensors`` (denoiser + learnable codec weights), ``ema.safetensors``,
- ``state.pt`` (optimiser, LR scheduler, loss stack incl. discriminator, counters), loaded
  with ``torch.load(weights_only=True)`` only,
- ``config.yaml`` (the full run config) and ``meta.json`` (step, loss report).

The folder is written under a temporary name (``.tmp-step_...``) and renamed when complete,
so a process killed at any moment leaves either no checkpoint or a complete one; temporary
folders are never taken for checkpoints and are cleaned up on the next save. Re-saving a step
that exists moves the old folder to ``.old-step_...`` for the instant between two renames; a
kill in that instant leaves the complete ``.old-`` folder, which is listed (and restored on
the next save) as long as its ``step_...`` folder is missing.

A *model folder* (``diffsr export``, docs/models.md) holds ``model.safetensors`` (the EMA weights,
with the step and the weights' origin in the file's metadata) and ``config.yaml``, without the
training state: :func:`read_checkpoint` reads it too, so every ``--ckpt`` takes a run folder, a
checkpoint folder or a model folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffsr.core.errors import CheckpointError
from diffsr.core.serialization import load_safetensors, safe_torch_load  # noqa: F401  (re-exported)

STEP_DIR = re.compile(r"^step_(\d{7,})$")
OLD_DIR = re.compile(r"^\.old-step_(\d{7,})$")  # a step folder being replaced (see save_checkpoint)
FILES = ("model.safetensors", "state.pt", "config.yaml", "meta.json")
MODEL_FILES = ("model.safetensors", "config.yaml")  # a model folder (diffsr export)


def _save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or non-contiguous storage: store independent copies
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path))


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: dict[str, Tensor],
    ema: dict[str, Tensor] | None,
    state: dict[str, Any],
    config_yaml: str,
    meta: dict[str, Any],
    keep_last: int = 3,
) -> Path:
    """Write a complete checkpoint folder atomically and prune to the newest ``keep_last``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        _save_tensors(tmp / "model.safetensors", model)
        if ema is not None:
            _save_tensors(tmp / "ema.safetensors", ema)
        torch.save(state, tmp / "state.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=2, default=float))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving the same step (e.g. the final one): swap atomically
            old = root / f".old-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    prune(root, keep_last)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (temporary folders never count)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found: dict[int, Path] = {}
    for p in root.iterdir():
        match = STEP_DIR.match(p.name)
        if match and p.is_dir() and _complete(p):
            found[int(match.group(1))] = p
    for p in root.iterdir():  # killed between the two renames of a re-save: the old copy counts
        match = OLD_DIR.match(p.name)
        if match and int(match.group(1)) not in found and p.is_dir() and _complete(p):
            found[int(match.group(1))] = p
    return [found[k] for k in sorted(found)]


def _complete(path: Path) -> bool:
    return all((path / f).is_file() for f in FILES)


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """True for a model folder: ``model.safetensors`` and ``config.yaml`` without the training state."""
    path = Path(path)
    return path.is_dir() and all((path / f).is_file() for f in MODEL_FILES) and not _complete(path)


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints and any stale temporary folders.

    A checkpoint is renamed out of the ``step_*`` namespace before it is deleted, so a kill in
    the middle of a deletion never leaves a half-deleted folder that still looks complete.
    """
    for stale in [*root.glob(".tmp-step_*"), *root.glob(".del-step_*")]:
        shutil.rmtree(stale, ignore_errors=True)
    for old in root.glob(".old-step_*"):
        final = root / old.name[len(".old-") :]
        if final.is_dir() and _complete(final):
            shutil.rmtree(old, ignore_errors=True)
        elif _complete(old):
            shutil.rmtree(final, ignore_errors=True)
            os.replace(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)
    done = list_checkpoints(root.parent)
    for old in done[:-keep_last]:
        trash = root / f".del-{old.name.removeprefix('.old-')}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder from a run folder, a checkpoints folder or a checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    if path.is_file():
        if path.name in FILES or path.suffix == ".safetensors":
            path = path.parent
        else:
            raise CheckpointError(f"{path}: expected a run or checkpoint folder, not a file")
    if _complete(path) or is_model_folder(path):
        return path
    run = path.parent if path.name == "checkpoints" else path
    found = list_checkpoints(run)
    if not found:
        raise CheckpointError(
            f"{path}: no complete checkpoint found (expected checkpoints/step_*/ with {', '.join(FILES)}, "
            f"or a model folder with {' and '.join(MODEL_FILES)})"
        )
    return found[-1]


def read_checkpoint(path: str | os.PathLike[str], *, ema: bool = True) -> dict[str, Any]:
    """Load a checkpoint folder: {'model', 'ema', 'state', 'config_yaml', 'meta', 'path'}."""
    ckpt = resolve_checkpoint(path)
    out: dict[str, Any] = {"path": ckpt}
    out["model"] = load_safetensors(ckpt / "model.safetensors")
    if is_model_folder(ckpt):
        return {**out, "ema": None, "state": None, "config_yaml": _read_config(ckpt),
                "meta": {**safetensors_metadata(ckpt / "model.safetensors"), "model_folder": True}}
    ema_file = ckpt / "ema.safetensors"
    out["ema"] = load_safetensors(ema_file) if ema and ema_file.is_file() else None
    out["state"] = safe_torch_load(ckpt / "state.pt")
    out["config_yaml"] = _read_config(ckpt)
    try:
        out["meta"] = json.loads((ckpt / "meta.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{ckpt / 'meta.json'}: not valid JSON") from None
    if not isinstance(out["meta"], dict):
        raise CheckpointError(f"{ckpt / 'meta.json'}: expected a JSON object, got {type(out['meta']).__name__}")
    return out


def _read_config(folder: Path) -> str:
    try:
        return (folder / "config.yaml").read_text()
    except UnicodeDecodeError:
        raise CheckpointError(f"{folder / 'config.yaml'}: not a text file") from None


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The string metadata of a safetensors file's header, values that hold JSON decoded ({} for none)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(err)[:100]})") from None
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return meta
