"""diffsr eval / bench options: usage errors are one line and exit 2, --set eval.KEY, bench with
baseline presets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffsr.cli import main
from tests.data._helpers import _rgb_png


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


@pytest.mark.parametrize("extra", [["--size", "0"], ["--repeat", "0"], ["--out", "{tmp}"],
                                   ["--out", "/dev/null/bench.json"]])
def test_bench_bad_size_or_repeat_is_one_line(extra: list[str], capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]  # --out a folder: it wants a file
    assert _run(["bench", "--config", "edsr", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- issue 18


def _folder(tmp_path: Path) -> Path:
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(data / "a.png")
    return data


@pytest.mark.parametrize(("extra", "words"), [
    (["--channels", "2"], "--channels: 2 is not 1"),
    (["--crop-border", "30"], "--crop-border 30: leaves nothing of a (48x40"),
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--limit", "0"], "--limit: must be >= 1"),
    (["--normalization", "bogus"], "--normalization: 'bogus'"),
])
def test_eval_bad_values_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                      words: str) -> None:
    data = _folder(tmp_path)
    assert _run(["eval", "--data", str(data), "--method", "bicubic", "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("where", ["inside", "same"])
def test_eval_out_inside_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    """Its crops would be read as test images by the next run."""
    data = _folder(tmp_path)
    out = data / "results" if where == "inside" else data
    assert _run(["eval", "--data", str(data), "--method", "bicubic", "--out", str(out)]) == 2
    assert "is inside --data" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["a.png"]


def test_eval_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path)
    (tmp_path / "out").write_text("keep")
    assert _run(["eval", "--data", str(data), "--method", "bicubic", "--out", str(tmp_path / "out")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "out").read_text() == "keep"


def test_baseline_prefix_on_a_diffusion_run_is_refused(teacher: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path)
    assert _run(["eval", "--data", str(data), "--method", f"edsr:{teacher}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "net 'unet'" in err and f"--method {teacher}" in err


def test_eval_normalization_is_used_for_the_hr(tmp_path: Path) -> None:
    """--normalization minmax on a dark 8-bit image: the HR is stretched to [0, 1] (auto would keep /255)."""
    from PIL import Image

    data = tmp_path / "dark"
    data.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(10, 60, (32, 32), dtype=np.uint8)).save(data / "d.png")
    for policy in ("auto", "minmax"):
        main(["eval", "--data", str(data), "--method", "bicubic", "--out", str(tmp_path / policy),
              "--normalization", policy])
    auto = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    stretched = json.loads((tmp_path / "minmax" / "metrics.json").read_text())
    # the same images, the same errors, measured on a range 255 / 49 times wider: PSNR 20 log10(255/49) lower
    gap = auto["summary"]["bicubic"]["psnr"]["mean"] - stretched["summary"]["bicubic"]["psnr"]["mean"]
    assert gap == pytest.approx(20 * np.log10(255 / 49), abs=0.05)
