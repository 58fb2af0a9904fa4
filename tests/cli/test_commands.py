"""The ``diffsr`` command line: help, presets, config round trip, guards, ``sr`` end to end.

Commands run in-process through ``diffsr.cli.main`` (the function behind the console script;
tests/integration/test_hostile_inputs.py runs ``python -m diffsr.cli`` itself). The expected
values come from outside the CLI: the preset files on disk, the YAML reloaded into a Config, image
headers read with PIL and nibabel, and the NIfTI geometry rule (same field of view: the outer
voxel edge stays put).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import typer
import yaml
from PIL import Image

from diffsr.cli import app
from diffsr.config import Config, load_config
from tests._cli import exit_code as _run

PRESETS = Path(__file__).resolve().parents[2] / "src" / "diffsr" / "presets"
TINY = [
    "data.patch_size=32", "data.batch_size=4", "net.width=16", "net.channel_mult=[1,2]",
    "train.log_every=1", "train.threads=1", "train.time_limit=null", "train.warmup_steps=0",
    "sample.steps=2", "process.steps=2", "train.audit=false", "train.steps=2",
]
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained for 2 steps through ``diffsr train``."""
    run = tmp_path_factory.mktemp("cli") / "run"
    threads = torch.get_num_threads()
    try:
        code = _run(["train", "demo", "--out", str(run), "--no-progress", *_sets(TINY)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return run


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_command_list_is_known() -> None:
    assert set(COMMANDS) >= {"train", "sr", "eval", "bench", "audit", "presets", "config", "demo"}


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and (command is None or command in out)


def test_presets_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["presets"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    on_disk = {p.stem for p in PRESETS.glob("*.yaml")}
    assert on_disk and listed == on_disk


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_config_prints_yaml_that_reloads_equal(preset: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["config", preset]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert Config.model_validate(printed) == load_config(preset)


def test_config_set_applies_and_typo_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["config", "demo", "--set", "train.steps=7"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["steps"] == 7
    assert _run(["config", "demo", "--set", "train.stpes=7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "did you mean 'train.steps'" in err and len(err.splitlines()) == 1


def test_train_refuses_an_out_with_checkpoints(trained: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert _run(["train", "demo", "--out", str(run), "--no-progress", *_sets(TINY)]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # untouched
    # with --resume it goes on from step 2
    assert _run(["train", "demo", "--out", str(run), "--no-progress", "--resume",
                 *_sets([*TINY, "train.steps=3"])]) == 0
    assert (run / "checkpoints" / "step_0000003").is_dir()


def test_audit_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["audit", "demo"]) == 0
    assert "OK" in capsys.readouterr().out


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((h // 4 + 1, w // 4 + 1))
    return np.kron(base, np.ones((4, 4)))[:h, :w] * 0.8 + 0.2 * rng.random((h, w))


def test_sr_8bit_png(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in" / "grey8.png"
    src.parent.mkdir()
    Image.fromarray((_texture(12, 20) * 255).astype(np.uint8)).save(src)
    assert _run(["sr", str(src), "--ckpt", str(trained), "--out", str(tmp_path / "out")]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written == tmp_path / "out" / "grey8_sr.png"
    with Image.open(written) as im:
        assert im.mode == "L" and im.size == (80, 48)
        arr = np.asarray(im)
    assert arr.dtype == np.uint8 and arr.std() > 0


def test_sr_16bit_png_keeps_16_bits(trained: Path, tmp_path: Path) -> None:
    src = tmp_path / "grey16.png"
    values = (_texture(16, 16, 1) * 60000 + 1000).astype(np.uint16)
    Image.fromarray(values).save(src)
    with Image.open(src) as im:
        assert im.mode.startswith("I")  # PIL's 16-bit grey
    assert _run(["sr", str(src), "--ckpt", str(trained), "--out", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "grey16_sr.png") as im:
        assert im.size == (64, 64) and im.mode.startswith("I")
        arr = np.asarray(im)
    assert arr.max() > 255  # 16-bit levels, not an 8-bit image widened
    # not quantised to 8 bits either: levels that are not multiples of 257 appear
    assert np.any(arr.astype(np.int64) % 257 != 0)


def test_sr_exact_tiles_write_the_whole_image_result(trained: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--tile with the default exact mode: the 16-bit output equals the untiled one (to 1 level)."""
    src = tmp_path / "big.png"
    Image.fromarray((_texture(80, 72, 3) * 60000 + 1000).astype(np.uint16)).save(src)  # 320 x 288 HR
    assert _run(["sr", str(src), "--ckpt", str(trained), "--out", str(tmp_path / "whole")]) == 0
    assert _run(["sr", str(src), "--ckpt", str(trained), "--out", str(tmp_path / "tiled"), "--tile", "256"]) == 0
    assert _run(["sr", str(src), "--ckpt", str(trained), "--out", str(tmp_path / "blend"), "--tile", "128",
                 "--tile-mode", "blend"]) == 0
    capsys.readouterr()
    arrays = {}
    for name in ("whole", "tiled", "blend"):
        with Image.open(tmp_path / name / "big_sr.png") as im:
            arrays[name] = np.asarray(im).astype(np.int64)
    assert arrays["whole"].shape == (320, 288)
    assert np.abs(arrays["tiled"] - arrays["whole"]).max() <= 1
    assert np.abs(arrays["blend"] - arrays["whole"]).max() > 1  # blend tiles do differ
    # too small a tile for the net's receptive field, and an unknown mode: one line, exit 2, nothing written
    for extra, words in ((["--tile", "64", "--tile-mode", "exact"], "too small for exact tiling"),
                         (["--tile-mode", "fast"], "--tile-mode")):
        assert _run(["sr", str(src), "--ckpt", str(trained), "--out", str(tmp_path / "bad"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and words in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "bad" / "big_sr.png").exists()


def test_sr_nifti_divides_spacing_by_the_scale(trained: Path, tmp_path: Path) -> None:
    scale = 4
    vol = (_texture(12, 16, 2)[:, :, None] * np.linspace(0.5, 1.0, 3)[None, None]).astype(np.float32) * 1000
    affine = np.array([[0.0, 0.0, 3.0, -20.0], [-1.5, 0.0, 0.0, 40.0], [0.0, 2.0, 0.0, -10.0], [0, 0, 0, 1]])
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), src)
    assert _run(["sr", str(src), "--ckpt", str(trained), "--out", str(tmp_path / "out")]) == 0
    img = nib.load(tmp_path / "out" / "vol_sr.nii.gz")
    assert img.shape == (12 * scale, 16 * scale, 3)  # slices along the last axis, in-plane x4
    zooms = img.header.get_zooms()[:3]
    assert np.allclose(zooms, (1.5 / scale, 2.0 / scale, 3.0))
    # the same field of view: the outer edge of voxel 0 (index -0.5 in-plane) stays in place
    for k in range(3):
        corner_old = affine @ np.array([-0.5, -0.5, k, 1.0])
        corner_new = img.affine @ np.array([-0.5, -0.5, k, 1.0])
        assert np.allclose(corner_old, corner_new, atol=1e-5)
    assert np.isfinite(np.asanyarray(img.dataobj)).all()


def test_sr_output_inside_input_folder_is_refused(trained: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray((_texture(12, 12) * 255).astype(np.uint8)).save(folder / "a.png")
    assert _run(["sr", str(folder), "--ckpt", str(trained), "--out", str(folder / "sr")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "inside the input folder" in err
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]
