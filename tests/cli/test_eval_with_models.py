"""diffsr eval with a trained run as a method: --samples writes the calibration, and
``run@consistency=...`` compares sampling with and without data consistency.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffsr.cli import main
from tests.cli._helpers import _run


def test_eval_samples_writes_calibration(teacher: Path, tmp_path: Path) -> None:
    data = tmp_path / "hr"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(data / f"{i}.png")
    out = tmp_path / "eval"
    _run(["eval", "--data", str(data), "--scale", "4", "--method", "bicubic", "--method", str(teacher),
          "--samples", "3", "--steps", "4", "--out", str(out)])
    cal = json.loads((out / "calibration.json").read_text())
    (name, report), = cal.items()
    assert report["n_samples"] == 3 and -1 <= report["pearson"] <= 1
    Image.open(out / "calibration.png").verify()
    # the model facts of each method: parameters and sampling steps, in metrics.json and the report
    from diffsr.sampling.infer import load_model

    metrics = json.loads((out / "metrics.json").read_text())
    n_params = sum(p.numel() for p in load_model(teacher).model.parameters())
    assert metrics["models"]["bicubic"] == {"params": 0, "sampling_steps": None}
    assert metrics["models"][name] == {"params": n_params, "sampling_steps": 4}
    assert f"| {n_params:,} | 4 |" in (out / "report.md").read_text()


def test_eval_compares_with_and_without_consistency(teacher: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from diffsr.data.degrade import bicubic_down
    from diffsr.sampling.infer import method_from_spec

    data = tmp_path / "hr"
    data.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(data / "0.png")
    out = tmp_path / "eval"
    spec = f"{teacher}@consistency=backprojection,consistency_iters=5"
    _run(["eval", "--data", str(data), "--scale", "4", "--method", "bicubic", "--method", str(teacher),
          "--method", spec, "--steps", "1", "--steps", "2", "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    plain, consistent = metrics["methods"][1:]
    assert consistent == plain + "@consistency=backprojection,consistency_iters=5"
    assert set(metrics["steps_sweep"]) == {plain, consistent}
    # the option really changes sampling: back-projection brings downsample(SR) closer to LR
    lr = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    err = {name: (bicubic_down(fn(lr, 4), 4) - lr).abs().mean().item()
           for name, fn in (method_from_spec(str(teacher), 4), method_from_spec(spec, 4))}
    assert err[consistent] < 0.5 * err[plain]
    for bad in (f"{teacher}@consistency=fourier", f"{teacher}@colour=red", "bicubic@consistency=kspace"):
        with pytest.raises(SystemExit) as exit_:
            main(["eval", "--data", str(data), "--method", bad, "--out", str(tmp_path / "bad")])
        assert exit_.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_eval_warns_when_a_run_was_trained_with_another_normalization(teacher: Path, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The teacher learned 8-bit PNGs under ``auto`` (the type's range); mapped with minmax the run sees
    other units: one warning naming the run and the option that evaluates it as trained. As trained: none."""
    import logging

    from diffsr.sampling.infer import load_model

    assert load_model(teacher).config.data.normalization == "auto"
    data = tmp_path / "hr"
    data.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(10, 60, (32, 32), dtype=np.uint8)).save(data / "d.png")
    for policy in ("minmax", "auto"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="diffsr.cli.evaluate"):
            _run(["eval", "--data", str(data), "--scale", "4", "--method", str(teacher), "--steps", "1",
                  "--normalization", policy, "--out", str(tmp_path / policy)])
        warned = [r.getMessage() for r in caplog.records if "trained with data.normalization" in r.getMessage()]
        if policy == "minmax":
            assert len(warned) == 1
            assert "auto (dtype for d.png)" in warned[0] and "mapped with minmax" in warned[0]
            assert "--normalization auto" in warned[0]
        else:
            assert warned == []
