"""The demo end to end with a handful of steps: outputs exist and the bicubic numbers are right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from diffsr.cli.demo import load_val_images, run_demo


def test_demo_writes_report_metrics_and_figure(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    metrics = run_demo(out, steps=3, overrides=["data.batch_size=4", "train.time_limit=null"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["n_images"] == len(load_val_images())
    assert set(saved["per_image"]) >= {"bicubic", "diffsr"}
    Image.open(out / "comparison.png").verify()
    report = (out / "report.md").read_text()
    assert "Mean PSNR gain over bicubic" in report and f"{metrics['gain_db']:+.2f} dB" in report
    assert not list(out.glob(".tmp-*"))
    # the bicubic PSNR equals skimage's on the same crop (independent reference)
    import torch

    from diffsr.data.degrade import bicubic_down, upsample

    name, hr = load_val_images()[0]
    lr = bicubic_down(hr, 4).clamp(0, 1)
    bic = upsample(lr, 4).clamp(0, 1)
    ref = peak_signal_noise_ratio(hr[0, 0, 4:-4, 4:-4].double().numpy(), bic[0, 0, 4:-4, 4:-4].double().numpy(),
                                  data_range=1.0)
    assert saved["per_image"]["bicubic"][name]["psnr"] == pytest.approx(ref, abs=1e-6)
    assert np.isfinite(saved["gain_db"]) and torch.isfinite(torch.tensor(saved["gain_db"]))
