"""Evaluation items, how `diffsr eval` makes its test pairs: --degradation, --seed, --crop, --lr-dir,
DICOM series, and RGB files evaluated as BT.601 studio-swing Y.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffsr.cli import main
from diffsr.config import DegradationConfig
from diffsr.core.errors import DataError
from diffsr.data.datasets import load_eval_items
from diffsr.data.degrade import DEGRADATIONS, BicubicDegradation, build_degradation
from tests.data._helpers import _rgb_png, bicubic_lr


def _png(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return a


@pytest.fixture()
def hr_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hr"
    d.mkdir()
    for i in range(2):
        _png(d / f"im{i}.png", 50, 70, i)
    return d


def test_crop_is_the_centre_on_the_lr_grid(hr_dir: Path) -> None:
    full = load_eval_items(hr_dir, 4)
    cropped = load_eval_items(hr_dir, 4, crop=30)  # 30 -> 28 (multiple of 4)
    for f, c in zip(full, cropped, strict=True):
        assert f.hr.shape[-2:] == (48, 68) and c.hr.shape[-2:] == (28, 28)
        y0, x0 = (48 - 28) // 8 * 4, (68 - 28) // 8 * 4  # centre, rounded down to the LR grid
        torch.testing.assert_close(c.hr, f.hr[..., y0 : y0 + 28, x0 : x0 + 28], rtol=0, atol=0)
        # the LR is made from the cropped HR
        torch.testing.assert_close(c.lr, DEGRADATIONS.build("bicubic", scale=4)(c.hr, None))


def test_crop_larger_than_the_image_keeps_it_whole(hr_dir: Path) -> None:
    items = load_eval_items(hr_dir, 4, crop=400)
    assert items[0].hr.shape[-2:] == (48, 68)
    with pytest.raises(DataError, match="crop"):
        load_eval_items(hr_dir, 4, crop=2)


def test_degradation_and_seed(hr_dir: Path) -> None:
    bic = load_eval_items(hr_dir, 4)
    ir0 = load_eval_items(hr_dir, 4, degradation="infrared", seed=0)
    ir0b = load_eval_items(hr_dir, 4, degradation="infrared", seed=0)
    ir1 = load_eval_items(hr_dir, 4, degradation="infrared", seed=1)
    assert torch.equal(ir0[0].lr, ir0b[0].lr)  # deterministic
    assert not torch.equal(ir0[0].lr, ir1[0].lr)  # the seed matters
    assert not torch.allclose(ir0[0].lr, bic[0].lr, atol=1e-3)  # and it is not bicubic


def test_lr_dir_with_crop_cuts_the_matching_region(hr_dir: Path, tmp_path: Path) -> None:
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    lrs = [_png(lr_dir / f"im{i}.png", 12, 17, 10 + i) for i in range(2)]
    items = load_eval_items(hr_dir, 4, lr_dir=lr_dir, crop=28)
    for item, lr in zip(items, lrs, strict=True):
        assert item.paired and item.lr.shape[-2:] == (7, 7)
        y0, x0 = (12 - 7) // 2, (17 - 7) // 2
        np.testing.assert_allclose(item.lr[0, 0].numpy(), lr[y0 : y0 + 7, x0 : x0 + 7] / 255.0, atol=1e-6)


def test_cli_writes_the_inputs_and_rejects_bad_options(hr_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    main(["eval", "--data", str(hr_dir), "--method", "bicubic", "--out", str(out), "--degradation", "infrared",
          "--seed", "3", "--crop", "32"])
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["inputs"] == {"data": str(hr_dir), "lr": "infrared (torch bicubic) x4, seed 3",
                              "crop": "centre 32x32"}
    assert "infrared (torch bicubic) x4, seed 3" in (out / "report.md").read_text()
    for bad, key in ((["--degradation", "jpeg"], "--degradation"), (["--lr-dir", str(tmp_path / "no")], "--lr-dir"),
                     (["--crop", "4"], "--crop")):
        with pytest.raises(SystemExit) as exit_:
            main(["eval", "--data", str(hr_dir), "--method", "bicubic", "--out", str(tmp_path / "bad"), *bad])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert key in err and len(err.splitlines()) == 1 and "Traceback" not in err
        assert not (tmp_path / "bad" / "metrics.json").exists()


# ----------------------------------------------------------------------------- real data


def test_eval_items_cropped_and_deterministic(shared_data: Path) -> None:
    src = shared_data / "natural/set5/img_005.png"  # 228 x 344 (W x H): neither divides by 3
    items = load_eval_items(src, scale=3, channels=3)
    (item,) = items
    assert item.hr.shape == (1, 3, 342, 228) and item.lr.shape == (1, 3, 114, 76)
    rgb = np.asarray(Image.open(src).convert("RGB"), dtype=np.float64) / 255
    np.testing.assert_allclose(item.hr[0].permute(1, 2, 0).numpy(), rgb[:342, :228], atol=1e-6)
    torch.testing.assert_close(item.lr, bicubic_lr(item.hr, 3), rtol=0, atol=1e-6)
    assert item.record.meta["format"] == "png" and item.intensity.policy == "dtype"
    noisy = DegradationConfig(name="blur_noise")
    a = load_eval_items(src, scale=3, channels=1, degradation=noisy, seed=2)[0].lr
    b = load_eval_items(src, scale=3, channels=1, degradation=build_degradation(noisy, 3), seed=2)[0].lr
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_eval_items_from_a_dicom_series(shared_data: Path) -> None:
    items = load_eval_items(shared_data / "medical/brainix/T1", scale=4, max_slices=3,
                            degradation=BicubicDegradation(4))
    assert len(items) == 3 and all(it.hr.shape == (1, 1, 512, 512) for it in items)
    assert items[0].intensity.policy == "percentile"
    assert items[0].record is items[1].record and items[0].slice_index < items[1].slice_index


# ----------------------------------------------------------------------------- RGB files


def test_eval_hr_of_rgb_file_is_bt601_studio_y(tmp_path: Path) -> None:
    from diffsr.data.datasets import load_eval_items

    rgb = _rgb_png(tmp_path / "a.png")
    (item,) = load_eval_items(tmp_path / "a.png", 4, 1)
    r, g, b = (rgb[..., i] / 255.0 for i in range(3))
    expected = (65.481 * r + 128.553 * g + 24.966 * b + 16) / 255
    np.testing.assert_allclose(item.hr[0, 0].numpy(), expected, atol=1e-6)
