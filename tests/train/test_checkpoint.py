"""Checkpoints: atomic folders, pruning, safe loading (weights_only), one-line errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from diffsr.core.errors import CheckpointError
from diffsr.train.checkpoint import (
    list_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
    safe_torch_load,
    save_checkpoint,
)


def _save(run: Path, step: int, keep: int = 3) -> Path:
    w = {"net.weight": torch.full((2, 3), float(step)), "net.bias": torch.arange(3.0)}
    return save_checkpoint(
        run, step, model=w, ema={k: v * 2 for k, v in w.items()},
        state={"step": step, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}},
        config_yaml="name: x\n", meta={"note": "t"}, keep_last=keep,
    )


def test_round_trip_and_newest_resolution(tmp_path: Path) -> None:
    for s in (10, 20, 30):
        _save(tmp_path, s)
    ckpt = read_checkpoint(tmp_path)
    assert ckpt["path"].name == "step_0000030"
    assert torch.equal(ckpt["model"]["net.weight"], torch.full((2, 3), 30.0))
    assert torch.equal(ckpt["ema"]["net.weight"], torch.full((2, 3), 60.0))
    assert ckpt["state"]["step"] == 30 and ckpt["meta"]["step"] == 30
    assert resolve_checkpoint(tmp_path / "checkpoints" / "step_0000020").name == "step_0000020"


def test_keep_last_prunes_oldest(tmp_path: Path) -> None:
    for s in range(1, 7):
        _save(tmp_path, s, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000005", "step_0000006"]


def test_partial_folders_are_never_taken(tmp_path: Path) -> None:
    _save(tmp_path, 5)
    root = tmp_path / "checkpoints"
    # a crash mid-write leaves a temporary folder, or a step folder missing files
    (root / ".tmp-step_0000009-abc").mkdir()
    (root / ".tmp-step_0000009-abc" / "model.safetensors").write_bytes(b"partial")
    broken = root / "step_0000008"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path).name == "step_0000005"


def test_resave_same_step_replaces_atomically(tmp_path: Path) -> None:
    _save(tmp_path, 5)
    _save(tmp_path, 5)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000005"]
    assert not list((tmp_path / "checkpoints").glob(".old-*"))


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - the classic pickle payload
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        torch.save({"weights": torch.zeros(1), "payload": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="refused"):
        safe_torch_load(path)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(raw)
    assert str(raw) in str(info.value)


def test_truncated_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    ck = _save(tmp_path, 3)
    data = (ck / "state.pt").read_bytes()
    (ck / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="state.pt") as info:
        read_checkpoint(ck)
    assert "\n" not in str(info.value)
    st = ck / "model.safetensors"
    st.write_bytes(st.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_checkpoint(ck)
    with pytest.raises(CheckpointError, match="no such"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resolve_checkpoint(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    p = tmp_path / "empty_run"
    p.mkdir()
    return p
