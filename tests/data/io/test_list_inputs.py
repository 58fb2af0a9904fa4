"""list_inputs: the images of a folder, sorted; hidden and unknown files skipped."""

from __future__ import annotations

from pathlib import Path

from diffsr.data.io import list_inputs


def test_list_inputs_sorted_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.tif", "c.npy", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    assert list_inputs(tmp_path) == [tmp_path / "a.tif", tmp_path / "b.png", tmp_path / "c.npy"]
    assert list_inputs(tmp_path / "b.png") == [tmp_path / "b.png"]


def test_fifo_and_devices_are_one_line_not_a_hang(tmp_path: Path) -> None:
    """A FIFO, /dev/null, /dev/stdin given as inputs: DataError naming them (a FIFO is never opened,
    so nothing blocks); a FIFO inside a folder is skipped like any file that is not an image."""
    import os

    import pytest

    from diffsr.core.errors import DataError
    from diffsr.data.io import read

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "FIFO"), (Path("/dev/null"), "character device")):
        for fn in (list_inputs, read):
            with pytest.raises(DataError, match=kind) as info:
                fn(path)
            assert str(info.value).startswith(str(path))
    with pytest.raises(DataError):
        read("/dev/stdin")
    (tmp_path / "a.png").write_bytes(b"x")
    assert list_inputs(tmp_path) == [tmp_path / "a.png"]
