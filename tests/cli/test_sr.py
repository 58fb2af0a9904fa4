"""diffsr sr (issue 18): option values checked before any work, --out checked before any compute,
batches that keep going, --normalization / --volume-index, one line and exit 2 for every user error.

Runs the real CLI in-process on the package's tiny teacher run (tests/cli/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests._cli import exit_code as _run


def _png(path: Path, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(("extra", "words"), [
    (["--steps", "0"], "--steps: must be >= 1, got 0"),
    (["--samples", "0"], "--samples: must be >= 1, got 0"),
    (["--tile", "0"], "--tile: must be >= 16, got 0"),  # not "the default" (no tiling)
    (["--tile", "1"], "--tile: must be >= 16, got 1"),
    (["--overlap", "-1"], "--overlap: must be >= 0"),
    (["--volume-index", "-1"], "--volume-index: must be >= 0"),
    (["--normalization", "percentil"], "--normalization: 'percentil' is not one of"),
    (["--percentiles", "99,1"], "--percentiles: LOW must be below HIGH"),
    (["--window", "a,b"], "--window: 'a,b' is not LOW,HIGH"),
])
def test_bad_option_values_are_one_line(teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        extra: list[str], words: str) -> None:
    src = _png(tmp_path / "a.png")
    assert _run(["sr", str(src), "--ckpt", str(teacher), "--out", str(tmp_path / "out"), *extra]) == 2
    assert words in _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_tile_too_small_for_the_model_names_tile_and_its_minimum(teacher: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = _png(tmp_path / "a.png", 40)
    assert _run(["sr", str(src), "--ckpt", str(teacher), "--out", str(tmp_path / "out"), "--tile", "32",
                 "--tile-mode", "blend"]) == 2
    err = _one_error(capsys)
    assert "--tile" in err and "at least 68 HR pixels" in err  # 2 x overlap 32, rounded up to the codec's 4


@pytest.mark.parametrize("kind", ["a file", "/dev/null", "under a file"])
def test_out_is_checked_before_any_compute(teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           kind: str) -> None:
    (tmp_path / "taken").write_text("mine")
    out = {"a file": tmp_path / "taken", "/dev/null": Path("/dev/null"),
           "under a file": tmp_path / "taken" / "out"}[kind]
    assert _run(["sr", str(_png(tmp_path / "a.png")), "--ckpt", str(teacher), "--out", str(out)]) == 2
    assert f"--out {out}" in _one_error(capsys)
    assert (tmp_path / "taken").read_text() == "mine"


def test_good_bad_good_processes_the_good_ones_and_exits_2(teacher: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    _png(folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # truncated
    (folder / "c.tif").write_bytes(b"II*\0" + bytes(60))  # garbage
    _png(folder / "d.png")
    capsys.readouterr()
    assert _run(["sr", str(folder), "--ckpt", str(teacher), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") for e in errors)
    assert "b.png" in errors[0] and "c.tif" in errors[1]
    assert [Path(p).name for p in captured.out.split()] == ["a_sr.png", "d_sr.png"]
    # --fail-fast: the first bad file stops the batch (a's output is complete and stays)
    assert _run(["sr", str(folder), "--ckpt", str(teacher), "--out", str(tmp_path / "ff"), "--fail-fast"]) == 2
    assert "b.png" in _one_error(capsys)
    assert sorted(p.name for p in (tmp_path / "ff").iterdir()) == ["a_sr.png", "a_sr.png.json"]


def test_normalization_and_volume_index_options(teacher: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    vol = np.random.default_rng(1).random((16, 16, 2, 3)).astype(np.float32) * 1000
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "fmri.nii.gz")
    argv = ["sr", str(tmp_path / "fmri.nii.gz"), "--ckpt", str(teacher), "--out", str(tmp_path / "out")]
    assert _run(argv) == 2
    assert "--volume-index" in _one_error(capsys)
    assert _run([*argv, "--volume-index", "2", "--normalization", "window", "--window", "100,900"]) == 0
    record = json.loads((tmp_path / "out" / "fmri_sr.nii.gz.json").read_text())["intensity"]
    assert (record["policy"], record["lo"], record["hi"]) == ("window", 100.0, 900.0)
    assert record["chosen"] == "--normalization window"
    out = np.asarray(nib.load(tmp_path / "out" / "fmri_sr.nii.gz").dataobj)
    assert out.shape == (64, 64, 2) and out.min() >= 100 and out.max() <= 900
