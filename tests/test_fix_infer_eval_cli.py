"""diffsr eval / bench CLI fixes: usage errors, --set eval.KEY, BT.601 Y for RGB files, bench baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffsr.cli import main


def _rgb_png(path: Path, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.stack([(xx * 7) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1).astype(np.float64)
    rgb = np.clip(rgb + rng.integers(-10, 10, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)
    return rgb


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--method", "bicubic", "--out", "o"],  # missing --data
        ["eval", "--data", "x", "--method", "bicubic", "--out", "o", "--scale", "abc"],
        ["eval", "--bogus"],
    ],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err


def test_eval_hr_of_rgb_file_is_bt601_studio_y(tmp_path: Path) -> None:
    from diffsr.data.datasets import load_eval_items

    rgb = _rgb_png(tmp_path / "a.png")
    (item,) = load_eval_items(tmp_path / "a.png", 4, 1)
    r, g, b = (rgb[..., i] / 255.0 for i in range(3))
    expected = (65.481 * r + 128.553 * g + 24.966 * b + 16) / 255
    np.testing.assert_allclose(item.hr[0, 0].numpy(), expected, atol=1e-6)


def test_eval_set_changes_conventions_and_typo_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _rgb_png(tmp_path / "a.png")
    out = tmp_path / "out"
    base = ["eval", "--data", str(tmp_path / "a.png"), "--method", "bicubic", "--out", str(out)]
    main(base + ["--set", "eval.quantize=true", "--set", "eval.y_channel=false"])
    conv = json.loads((out / "metrics.json").read_text())["conventions"]
    assert conv["quantize_bits"] == 8
    assert conv["y_channel"] is False
    assert "BT.601 studio-swing Y" in conv["rgb_input"]
    capsys.readouterr()
    assert _run(base + ["--set", "eval.quantise=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "eval.quantise" in err and len(err.splitlines()) == 1
    assert _run(base + ["--set", "eval.y_channel=maybe"]) == 2
    assert "eval.y_channel" in capsys.readouterr().err


def test_bench_baseline_preset_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    main(["bench", "--config", "edsr", "--size", "32", "--repeat", "1", "--out", str(out)])
    assert out.exists()


@pytest.mark.parametrize("extra", [["--size", "0"], ["--repeat", "0"]])
def test_bench_bad_size_or_repeat_is_one_line(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["bench", "--config", "edsr", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
