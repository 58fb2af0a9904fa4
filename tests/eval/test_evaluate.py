"""evaluate(): schema, per-image values against a direct computation, files, atomicity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio

from diffsr.core.errors import DiffsrError
from diffsr.eval import EvalOptions
from diffsr.eval.evaluate import EvalItem, bicubic, evaluate
from diffsr.eval.metrics import Conventions

SCALE = 2


def _items(n: int = 3, channels: int = 1, size: int = 32, volume: str | None = None) -> list[EvalItem]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = np.stack([gaussian_filter(rng.random((size, size)), 1.5) for _ in range(channels)])
        img = (img - img.min()) / (img.max() - img.min())
        hr = torch.from_numpy(img).float()[None]
        lr = F.interpolate(hr, scale_factor=1 / SCALE, mode="bicubic", antialias=True).clamp(0, 1)
        items.append(EvalItem(name=f"img{i}", hr=hr, lr=lr, volume=volume, slice_index=i if volume else None))
    return items


def nearest(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="nearest")


def _strict_json(path: Path) -> dict:
    def bad(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=bad)


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()


def _no_temporaries(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if p.name.startswith(".tmp")]
    assert not leftovers, leftovers


@pytest.fixture()
def conv_without_lpips_weights(tmp_path: Path) -> Conventions:
    return Conventions(crop_border=SCALE, lpips_weights=str(tmp_path / "missing_lpips.pth"))


def test_evaluate_schema_values_and_files(tmp_path: Path, conv_without_lpips_weights: Conventions) -> None:
    items = _items()
    out = tmp_path / "results"
    methods = {"bicubic": bicubic, "nearest": nearest}
    results = evaluate(items, methods, conv_without_lpips_weights, out, reproduce="diffsr eval --scale 2")

    data = _strict_json(out / "metrics.json")
    for key in ("conventions", "methods", "per_image", "summary", "paired", "timing", "notes"):
        assert key in data, key
    assert data["methods"] == ["bicubic", "nearest"]
    assert data["conventions"]["crop_border"] == SCALE and data["conventions"]["data_range"] == 1.0
    assert set(data["per_image"]["bicubic"]) == {"img0", "img1", "img2"}
    for metric in ("psnr", "ssim", "sharpness"):
        s = data["summary"]["nearest"][metric]
        assert set(s) >= {"mean", "std", "ci95"} and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert list(data["paired"]) == ["nearest"]  # every method against the first
    assert set(data["paired"]["nearest"]["psnr"]) >= {"mean_diff", "ci95"}
    assert data["timing"]["bicubic"]["seconds_per_image_median"] > 0
    assert results["per_image"] == data["per_image"]

    # per-image PSNR against a direct computation (clamp, crop, single channel)
    for item in items:
        for name, fn in methods.items():
            sr = fn(item.lr.double(), SCALE).clamp(0, 1)[0, 0].numpy()[SCALE:-SCALE, SCALE:-SCALE]
            hr = item.hr.double()[0, 0].numpy()[SCALE:-SCALE, SCALE:-SCALE]
            expected = peak_signal_noise_ratio(hr, sr, data_range=1.0)
            assert data["per_image"][name][item.name]["psnr"] == pytest.approx(expected, abs=1e-6)
    diffs = [
        data["per_image"]["nearest"][i.name]["psnr"] - data["per_image"]["bicubic"][i.name]["psnr"]
        for i in items
    ]
    assert data["paired"]["nearest"]["psnr"]["mean_diff"] == pytest.approx(np.mean(diffs))

    # LPIPS weights missing: skipped, and the reason is in the notes
    assert "lpips" not in data["summary"]["bicubic"]
    assert any("LPIPS" in n for n in data["notes"])

    report = (out / "report.md").read_text()
    assert "bicubic" in report and "crop_border" in report and "diffsr eval --scale 2" in report
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {"metrics.png"} and any(p.name.startswith("crops_") for p in pngs)
    for p in pngs:
        _assert_png(p)
        assert p.name in report
    _no_temporaries(tmp_path)


def test_steps_sweep_volume_montage_rgb_and_saved_outputs(tmp_path: Path) -> None:
    items = _items(n=4, channels=3, volume="vol_a")
    sweep = {
        "bicubic+noise": {
            s: (
                lambda lr, scale, s=s: (
                    bicubic(lr, scale)
                    + 0.05
                    / s
                    * torch.randn(lr.shape[0], lr.shape[1], lr.shape[2] * scale, lr.shape[3] * scale)
                )
            )
            for s in (1, 2, 4)
        }
    }
    conv = Conventions(crop_border=SCALE)
    data = evaluate(
        items,
        {"bicubic": bicubic, "nearest": nearest},
        conv,
        tmp_path,
        steps_sweep=sweep,
        lpips=False,
        save_outputs=True,
        n_crops=1,
    )
    assert set(data["steps_sweep"]["bicubic+noise"]) == {"1", "2", "4"}
    psnr_by_steps = [data["steps_sweep"]["bicubic+noise"][s]["psnr"]["mean"] for s in ("1", "2", "4")]
    assert psnr_by_steps == sorted(psnr_by_steps)  # less noise with more "steps"
    for name in ("metrics.png", "psnr_vs_steps.png", "montage_vol_a.png"):
        _assert_png(tmp_path / name)
    saved = sorted((tmp_path / "outputs" / "nearest").glob("*.png"))
    assert len(saved) == 4
    with Image.open(saved[0]) as im:
        assert im.mode == "RGB" and im.size == (32, 32)
    _no_temporaries(tmp_path)


def test_method_with_wrong_output_shape_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DiffsrError, match="method 'broken' returned"):
        evaluate(
            _items(n=1),
            {"broken": lambda lr, scale: lr},
            Conventions(crop_border=2),
            tmp_path,
            lpips=False,
            figures=False,
        )
    assert not (tmp_path / "metrics.json").exists()


def test_mapping_items_and_explicit_scale_check(tmp_path: Path) -> None:
    items = [{"name": i.name, "hr": i.hr, "lr_img": i.lr} for i in _items(n=2)]
    data = evaluate(
        items,
        {"bicubic": bicubic},
        Conventions(crop_border=2),
        tmp_path,
        lr_key="lr_img",
        scale=SCALE,
        lpips=False,
        figures=False,
    )
    assert set(data["per_image"]["bicubic"]) == {"img0", "img1"} and data["paired"] == {}
    with pytest.raises(DiffsrError, match="scale 2, expected 4"):
        evaluate(
            items,
            {"bicubic": bicubic},
            Conventions(crop_border=2),
            tmp_path,
            lr_key="lr_img",
            scale=4,
            lpips=False,
            figures=False,
        )


def test_options_object_equals_keywords_and_a_keyword_overrides_it(tmp_path: Path) -> None:
    items, conv = _items(n=2), Conventions(crop_border=2)
    methods = {"bicubic": bicubic, "nearest": nearest}
    by_keywords = evaluate(items, methods, conv, tmp_path / "a", lpips=False, figures=False, n_boot=50, seed=1)
    # lpips=True in the options would add an "lpips" metric: the keyword must win
    options = EvalOptions(lpips=True, figures=False, n_boot=50, seed=1)
    by_options = evaluate(items, methods, conv, tmp_path / "b", options, lpips=False)
    for key in ("per_image", "summary", "paired", "steps_sweep", "notes"):
        assert by_options[key] == by_keywords[key], key
    assert by_options["meta"]["bootstrap_resamples"] == 50 and "lpips" not in by_options["summary"]["bicubic"]
    assert options.lpips is True  # frozen: evaluate did not change it
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 2  # type: ignore[misc]


def test_unknown_keyword_is_a_type_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'n_crop' \(did you mean 'n_crops'\?\)"):
        evaluate(_items(n=1), {"bicubic": bicubic}, Conventions(crop_border=2), tmp_path / "out", n_crop=1)
    assert not (tmp_path / "out").exists()  # rejected before anything is run or written
