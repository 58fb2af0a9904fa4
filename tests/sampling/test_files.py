"""sr on files (issue 18): every output path decided before any work; no input lost or overwritten;
batches that keep going; stale temporaries of a killed run cleaned; the memory estimate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffsr.core.errors import DataError, DiffsrError
from diffsr.data.io import list_inputs
from diffsr.sampling.files import plan_outputs, sr_memory
from diffsr.sampling.infer import LoadedModel, sr_files
from tests.sampling._helpers import _loaded


def _png(path: Path, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def _dicom(path: Path) -> Path:
    from tests.data.io.test_dicom import _dataset, _save

    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(_dataset(), path)


def _plan(inputs: list[Path], out: Path, extras: tuple[str, ...] = ()) -> list:
    files = [f for p in inputs for f in list_inputs(p)]
    return plan_outputs(inputs, files, out, extras=extras)


@pytest.mark.parametrize("layout", ["same-name-two-folders", "dicom-file-and-series-folder"])
def test_two_inputs_with_one_output_name_are_refused(tmp_path: Path, layout: str) -> None:
    if layout == "same-name-two-folders":
        inputs = [_png(tmp_path / "a" / "scan.png"), _png(tmp_path / "b" / "scan.png")]
        target = "scan_sr.png"
    else:
        inputs = [_dicom(tmp_path / "scan.dcm"), _dicom(tmp_path / "scan" / "1.dcm").parent]
        target = "scan_sr"
    with pytest.raises(DiffsrError, match="would both be written to") as info:
        _plan(inputs, tmp_path / "out")
    message = str(info.value)
    assert str(inputs[0]) in message and str(inputs[1]) in message and target in message


def test_one_file_given_twice_is_named_as_such(tmp_path: Path) -> None:
    """``a.png a.png``, or a folder and a file inside it: one input twice, not two inputs to rename."""
    png = _png(tmp_path / "in" / "a.png")
    for inputs in ([png, png], [png, tmp_path / "in" / ".." / "in" / "a.png"]):
        with pytest.raises(DiffsrError, match=r"a\.png: given twice \(also as .*a\.png\); give each input once"):
            _plan(inputs, tmp_path / "out")


def test_an_output_that_would_overwrite_an_input_is_refused(tmp_path: Path) -> None:
    """x.png and x_sr.png with --out their own folder: x's output is x_sr.png."""
    inputs = [_png(tmp_path / "x.png"), _png(tmp_path / "x_sr.png")]
    with pytest.raises(DiffsrError, match="would overwrite the input"):
        _plan(inputs, tmp_path)
    with pytest.raises(DiffsrError, match="would overwrite the input"):  # a companion (std) too
        _plan([_png(tmp_path / "y.png"), _png(tmp_path / "y_sr_std.png")], tmp_path, extras=("std",))
    plans = _plan(inputs, tmp_path / "out")  # elsewhere: fine, and every path is known up front
    assert [p.sr.name for p in plans] == ["x_sr.png", "x_sr_sr.png"]
    assert plans[0].record == tmp_path / "out" / "x_sr.png.json"


def test_an_output_folder_that_holds_an_input_is_refused(tmp_path: Path) -> None:
    """A DICOM output folder is replaced as a whole: an input inside it would be lost."""
    series = _dicom(tmp_path / "scan" / "1.dcm").parent
    inside = _png(tmp_path / "out" / "scan_sr" / "keep.png")
    with pytest.raises(DiffsrError, match="would replace the input"):
        _plan([series, inside], tmp_path / "out")


def test_existing_paths_of_the_wrong_kind_or_with_foreign_files_are_refused(tmp_path: Path) -> None:
    series = _dicom(tmp_path / "scan" / "1.dcm").parent
    out = tmp_path / "out"
    (out / "scan_sr").mkdir(parents=True)
    (out / "scan_sr" / "notes.txt").write_text("mine")
    with pytest.raises(DiffsrError, match="holds files diffsr did not write"):
        _plan([series], out)
    (out / "scan_sr" / "notes.txt").unlink()
    _dicom(out / "scan_sr" / "old.dcm")  # an earlier output: replaced, fine
    _plan([series], out)
    (out / "x_sr.png").mkdir()
    with pytest.raises(DiffsrError, match="is a folder where the output file must go"):
        _plan([_png(tmp_path / "x.png")], out)
    (out / "s_sr").write_text("a file")
    with pytest.raises(DiffsrError, match="DICOM output is a folder"):
        _plan([_dicom(tmp_path / "s.dcm")], out)


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return _loaded("demo", ["net.width=16", "net.channel_mult=[1,2]", "sample.steps=1", "process.steps=2"])


def test_a_batch_keeps_going_past_a_bad_file(loaded: LoadedModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _png(folder / "a.png")
    (folder / "b.png").write_text("not an image")
    _png(folder / "c.png")
    failed: list[tuple[Path, str]] = []
    written = sr_files(loaded, [folder], tmp_path / "out", on_error=lambda p, e: failed.append((p, str(e))))
    assert [p.name for p in written] == ["a_sr.png", "c_sr.png"]
    assert [(p.name, "not a PNG" in e) for p, e in failed] == [("b.png", True)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_sr.png", "a_sr.png.json", "c_sr.png",
                                                                     "c_sr.png.json"]
    with pytest.raises(DataError, match="b.png"):  # the API default: the first failure is raised
        sr_files(loaded, [folder], tmp_path / "out2")


def test_temporaries_of_a_killed_run_are_removed_at_start(loaded: LoadedModel, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True).stdout)
    (out / f".tmp-{pid}-a_sr-x1y2.png").write_bytes(b"half")  # what a kill -9 mid-write leaves
    (out / f".tmp-{pid}-scan_sr-abcd").mkdir()
    sr_files(loaded, [_png(tmp_path / "a.png")], out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert (out / "a_sr.png").exists() and os.getpid() != pid


def test_memory_estimate_refuses_before_reading_into_the_model(loaded: LoadedModel, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (1, 3, 3200, 3072)
    whole = sr_memory(loaded, shape, samples=1, tile=None, itemsize=1)
    tiled = sr_memory(loaded, shape, samples=1, tile=512, itemsize=1)
    hr = 3 * 3200 * 3072 * 16  # values of the x4 output
    # tiled: at least the float32 output, its uint8 copy and one image-sized sampler tensor (9 bytes a value),
    # below the 11.4 bytes a value measured with blended tiles of 512 on the demo model (16 with exact ones);
    # untiled: two sampler tensors and the net's activations over the whole image on top
    assert hr * 9 < tiled < hr * 11 < hr * 13 < whole
    monkeypatch.setenv("DIFFSR_MEMORY_AVAILABLE", "1024")  # a machine with 1 KiB to spare
    with pytest.raises(DataError, match=r"a\.png: x4 super-resolution of 12x12x1 \(untiled\) needs about"):
        sr_files(loaded, [_png(tmp_path / "a.png")], tmp_path / "out")
    assert not (tmp_path / "out" / "a_sr.png").exists()
