"""The model card: training facts, the last evaluation with its conventions, intended use and limits."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

import diffsr
from diffsr.core.errors import DiffsrError
from diffsr.export import export_model
from tests.export._helpers import make_run


def _metrics_json(folder: Path, psnr: float) -> Path:
    """A metrics.json as diffsr eval writes it (the fields a card reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "methods": ["bicubic", "demo"],
        "summary": {"bicubic": {"psnr": {"mean": 27.125}, "ssim": {"mean": 0.8125}},
                    "demo": {"psnr": {"mean": psnr}, "ssim": {"mean": 0.84375}, "lpips": {"mean": None}}},
        "conventions": {"data_range": 1.0, "crop_border": 4, "y_channel": True, "bicubic": "matlab",
                        "lpips_net": "alex"},
        "meta": {"scale": 4, "images": 20, "created": "2026-01-02 03:04 UTC"},
        "inputs": {"data": "shared/data/infrared/roadscene/test"},
        "notes": ["LPIPS skipped: no weights"],
        "reproduce": "diffsr eval --data shared/data/infrared/roadscene/test --method bicubic --method run",
    }
    (folder / "metrics.json").write_text(json.dumps(data))
    return folder / "metrics.json"


def _body(folder: Path) -> str:
    return (folder / "README.md").read_text()


def test_card_states_training_data_degradation_process_and_limits(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "demo", ["data.degradation.name=blur_noise", "data.train=/data/ir/train"],
                   meta={"train_seconds": 300.0})
    export_model(run, tmp_path / "model", license="apache-2.0", tags=["infrared"])
    text = _body(tmp_path / "model")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "apache-2.0" and "infrared" in front["tags"]
    assert "`/data/ir/train`" in text and "`blur_noise`" in text and "x4, 1" in text
    assert "`resshift`" in text and "`wavelet`" in text and "`unet`" in text
    assert "| steps | 5 of 3000" in text and "| training time | 5 min |" in text
    assert "Research use; not for diagnosis" in text
    # the registered degradations it did not see are named, the one it saw is not among them
    limits = text.split("## Limitations")[1]
    for other in ("`bicubic`", "`infrared`", "`kspace`", "`realesrgan`"):
        assert other in limits
    assert "`blur_noise`" not in limits.split("it was not trained for")[1].split("nor for")[0]


def test_card_shows_the_last_eval_with_its_conventions(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    older = _metrics_json(tmp_path / "run" / "eval_old", psnr=27.5)
    newer = _metrics_json(tmp_path / "run" / "eval_new", psnr=28.25)
    past = time.time() - 100
    os.utime(older, (past, past))
    export_model(run, tmp_path / "model")
    text = _body(tmp_path / "model")
    assert str(newer) in text and "| demo | 28.25 | 0.8438 | n/a |" in text and "| bicubic | 27.12 | 0.8125 |" in text
    assert "crop_border 4" in text and "bicubic matlab" in text and "y_channel True" in text
    assert "20 images of `shared/data/infrared/roadscene/test`" in text and "LPIPS skipped" in text
    # an explicit --eval wins over the newest one
    export_model(run, tmp_path / "model2", evaluation=older.parent)
    assert "| demo | 27.5 |" in _body(tmp_path / "model2")


def test_card_falls_back_to_the_last_validation_and_says_so(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", meta={"val": {"val/psnr": 21.5, "val/psnr_bicubic": 20.25, "val/ssim": 0.5,
                                                   "val/ssim_bicubic": 0.4375, "val/images": 3.0}})
    export_model(run, tmp_path / "model")
    text = _body(tmp_path / "model")
    assert "No `diffsr eval` run was found" in text and "| PSNR (dB) | 21.5 | 20.25 |" in text
    assert "| SSIM | 0.5 | 0.4375 |" in text and "| sharpness (1 = HR) | n/a | n/a |" in text
    assert "not a held-out test" in text and "3 images" in text
    bare = make_run(tmp_path / "bare", meta={})
    export_model(bare, tmp_path / "model_bare")
    text = _body(tmp_path / "model_bare")
    assert "No evaluation was recorded" in text and "not recorded" in text  # nor the training time


def test_a_trained_run_records_time_and_validation_for_its_card(tmp_path: Path, blocky_pngs: Path) -> None:
    sets = ["data.patch_size=32", "data.batch_size=2", "net.width=16", "net.channel_mult=[1,2]", "train.steps=2",
            "train.time_limit=null", "train.val_every=2", "data.val_images=2", "train.threads=2",
            f"data.train={blocky_pngs}", f"data.val={blocky_pngs}"]
    from diffsr.train.trainer import Trainer

    result = Trainer(diffsr.load_config("demo", sets), tmp_path / "run", progress=False).fit()
    export_model(tmp_path / "run", tmp_path / "model")
    text = _body(tmp_path / "model")
    assert f"| PSNR (dB) | {result.val['val/psnr']:.4g} | {result.val['val/psnr_bicubic']:.4g} |" in text
    meta = json.loads((result.checkpoint / "meta.json").read_text())
    assert 0 < meta["train_seconds"] <= result.seconds + 1 and meta["val"] == result.val


def test_a_bad_eval_file_is_one_line(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(DiffsrError, match="not the metrics.json of a diffsr eval"):
        export_model(run, tmp_path / "model", evaluation=tmp_path / "junk.json")
    with pytest.raises(DiffsrError, match="no metrics.json there"):
        export_model(run, tmp_path / "model", evaluation=tmp_path / "nowhere")
    assert not (tmp_path / "model").exists()
