"""diffsr calibrate -> sr --samples (calibrated _lo / _hi) -> eval (risk, width, baselines); bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffsr.cli import main


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cal")
    rng = np.random.default_rng(0)
    for split, n in (("cal", 10), ("test", 4)):
        (root / split).mkdir()
        for i in range(n):
            img = np.kron(rng.random((6, 6)), np.ones((8, 8))) * 0.7 + 0.3 * rng.random((48, 48))
            Image.fromarray((img * 255).astype(np.uint8)).save(root / split / f"im{i}.png")
    main(["train", "demo", "--out", str(root / "run"), "--no-progress", "--set", "train.steps=20",
          "--set", "data.patch_size=32", "--set", "data.batch_size=4", "--set", "train.time_limit=null",
          "--set", f"data.train={root / 'cal'}"])
    main(["calibrate", "--ckpt", str(root / "run"), "--data", str(root / "cal"), "--scale", "4", "--samples", "3",
          "--alpha", "0.2"])
    return root


def test_calibrate_writes_the_fit_and_sr_writes_calibrated_intervals(calibrated_run: Path) -> None:
    cal = json.loads((calibrated_run / "run" / "calibration.json").read_text())
    assert cal["method"] == "crc" and cal["alpha"] == 0.2 and cal["n_images"] == 10
    assert cal["sampling"]["samples"] == 3 and cal["lam"] > 0 and cal["constant_width"] > 0
    assert cal["data"]["path"].endswith("cal")
    out = calibrated_run / "sr"
    main(["sr", str(calibrated_run / "test" / "im0.png"), "--ckpt", str(calibrated_run / "run"), "--out", str(out),
          "--samples", "3"])
    lo = np.asarray(Image.open(out / "im0_sr_lo.png"), dtype=np.float64)
    hi = np.asarray(Image.open(out / "im0_sr_hi.png"), dtype=np.float64)
    mean = np.asarray(Image.open(out / "im0_sr.png"), dtype=np.float64)
    assert lo.shape == hi.shape == mean.shape == (192, 192)  # x4
    assert (lo <= mean + 1).all() and (mean <= hi + 1).all() and (hi - lo).mean() > 0  # 8-bit rounding: +-1


def test_sr_with_other_sampling_options_than_the_calibration_is_refused(calibrated_run: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sr", str(calibrated_run / "test" / "im0.png"), "--ckpt", str(calibrated_run / "run"), "--out",
              str(calibrated_run / "sr2"), "--samples", "5"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "samples=3" in err and "samples=5" in err and len(err.splitlines()) == 1
    assert not (calibrated_run / "sr2").exists()


def test_eval_reports_the_risk_and_width_against_the_baselines(calibrated_run: Path) -> None:
    out = calibrated_run / "ev"
    main(["eval", "--data", str(calibrated_run / "test"), "--method", "bicubic", "--method",
          str(calibrated_run / "run"), "--scale", "4", "--out", str(out), "--detail-sweep", "0,1"])
    metrics = json.loads((out / "metrics.json").read_text())
    (name,) = metrics["uncertainty"]
    rep = metrics["uncertainty"][name]
    for kind in ("calibrated", "constant_band", "raw_std"):
        assert 0 <= rep[kind]["risk"]["mean"] <= 1 and rep[kind]["width"] >= 0
        assert set(rep[kind]["per_image"]) == {f"im{i}" for i in range(4)}
    assert rep["raw_std"]["width"] < rep["calibrated"]["width"]  # lam-hat > 1: the raw std is over-confident
    assert (out / f"coverage_vs_width_{name}.png").is_file()
    assert "## Calibrated intervals" in (out / "report.md").read_text()
    assert set(metrics["detail_sweep"][name]) == {"0.0", "1.0"} and (out / "perception_distortion.png").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--alpha", "1.5"], "--alpha: must be in (0, 1)"),
    (["--alpha", "0"], "--alpha: must be in (0, 1)"),
    (["--samples", "1"], "--samples: intervals need at least 2 samples per image"),
    (["--alpha", "0.05"], "needs at least 19 calibration images, found 10"),
    (["--alpha", "0.1", "--delta", "0.1"], "needs at least 22 calibration images, found 10"),
    (["--delta", "2"], "--delta: must be in (0, 1)"),
    (["--interval", "iqr"], "--interval: 'iqr' is not one of std, quantile"),
])
def test_bad_calibrate_arguments_are_one_line(calibrated_run: Path, capsys, args: list[str], message: str) -> None:
    before = (calibrated_run / "run" / "calibration.json").read_text()
    with pytest.raises(SystemExit) as info:
        main(["calibrate", "--ckpt", str(calibrated_run / "run"), "--data", str(calibrated_run / "cal"),
              "--scale", "4", "--samples", "3", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert (calibrated_run / "run" / "calibration.json").read_text() == before  # nothing overwritten
