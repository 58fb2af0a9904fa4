"""A patch size that needs more memory than the machine has: one line saying how much, before any
data is read or any batch allocated (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.cli import main


def test_a_patch_size_too_large_for_the_machine_says_how_much(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSR_MEMORY_AVAILABLE", str(8 * 2**30))  # an 8 GiB machine, whatever runs this
    threads = torch.get_num_threads()
    argv = ["train", "demo", "--out", str(tmp_path / "run"), "--no-progress", "--set", "data.patch_size=20000",
            "--set", "data.batch_size=4", "--set", "train.audit=false", "--set", "data.train=/nonexistent"]
    try:
        with pytest.raises(SystemExit) as info:
            main(argv)
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    # batch 4 x (6 image tensors of 20000^2 + 8 activations of width 64 on the 5001^2 latent grid of the
    # demo's level-2 wavelet codec) float32 values, the documented lower estimate; the data was never read
    need = 4 * 4 * (6 * 20000**2 + 8 * 64 * 5001**2) / 2**30
    assert "data.patch_size 20000" in err and f"needs about {need:.1f} GiB" in err and "8.0 GiB available" in err
    assert "nonexistent" not in err
