"""list_inputs: the images of a folder, sorted; hidden and unknown files skipped."""

from __future__ import annotations

from pathlib import Path

from diffsr.data.io import list_inputs


def test_list_inputs_sorted_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.tif", "c.npy", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    assert list_inputs(tmp_path) == [tmp_path / "a.tif", tmp_path / "b.png", tmp_path / "c.npy"]
    assert list_inputs(tmp_path / "b.png") == [tmp_path / "b.png"]
