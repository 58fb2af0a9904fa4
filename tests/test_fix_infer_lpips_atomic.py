"""Bad LPIPS weight files are one-line errors; atomic writes honour the umask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffsr.core.errors import DiffsrError


@pytest.mark.parametrize("content", [b"not a torch file at all", b"\x80\x02}q\x00(X"])
def test_corrupt_lpips_weights_are_one_line_error(content: bytes, tmp_path: Path) -> None:
    from diffsr.losses.perceptual import LPIPSLoss, _load

    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    lin = tmp_path / "lin.pth"
    lin.write_bytes(content)
    with pytest.raises(DiffsrError) as exc:  # the backbone is read first
        LPIPSLoss("alex", weights=lin, backbone_weights=bad)
    assert "\n" not in str(exc.value) and "bad.pth" in str(exc.value)
    with pytest.raises(DiffsrError) as exc:  # the same loader reads the linear-layer weights
        _load(lin)
    assert "\n" not in str(exc.value) and "lin.pth" in str(exc.value)


def test_atomic_write_mode_follows_umask(tmp_path: Path) -> None:
    from diffsr.core.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o027)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o640


def test_png_slice_folder_is_written_via_a_temporary_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from diffsr.data import io

    like = io.Record(np.zeros((3, 1, 8, 8), np.float32), {"format": "png", "dtype": "uint8", "bits": 8,
                                                           "range": [0, 255], "mode": "L"})
    from diffsr.data.normalize import Intensity

    intensity = Intensity(policy="fixed", lo=0.0, hi=255.0)
    unit = np.full((3, 1, 8, 8), 0.5, np.float32)
    out = io.write(tmp_path / "vol.png", unit, like=like, intensity=intensity, scale=1)
    assert out.is_dir() and len(list(out.glob("*.png"))) == 3
    assert not list(tmp_path.glob(".tmp-*"))
    # a failure half-way leaves the earlier output untouched and no partial folder
    calls = {"n": 0}
    real = io.png._write_png_file

    def flaky(path: Path, hwc: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(path, hwc)

    monkeypatch.setattr(io.png, "_write_png_file", flaky)  # where _write_png looks it up
    with pytest.raises(OSError):
        io.write(tmp_path / "vol.png", unit * 0.5, like=like, intensity=intensity, scale=1)
    assert sorted(p.name for p in out.iterdir()) == [f"vol_{i:04d}.png" for i in range(3)]
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))
