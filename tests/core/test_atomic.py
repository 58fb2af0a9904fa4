"""Atomic writes: the file mode follows the umask."""

from __future__ import annotations

import os
from pathlib import Path


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
