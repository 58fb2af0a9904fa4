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


# ----------------------------------------------------------------------------- issue 18


def test_temporaries_of_dead_processes_are_removed_others_kept(tmp_path: Path) -> None:
    """A writer killed mid-write leaves .tmp-<pid>-...; remove_stale_temporaries clears those of dead
    processes (files and folders) and keeps those of running ones and everything else."""
    import subprocess
    import sys

    from diffsr.core.atomic import atomic_path, remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (tmp_path / f".tmp-{pid}-x_sr-abc.png").write_bytes(b"partial")
    (tmp_path / f".tmp-{pid}-scan_sr-def").mkdir()
    (tmp_path / f".tmp-{pid}-scan_sr-def" / "a.dcm").write_bytes(b"partial")
    (tmp_path / f".old-{pid}-scan_sr-ghi").mkdir()
    alive = tmp_path / f".tmp-{os.getpid()}-y_sr-jkl.png"
    alive.write_bytes(b"being written")
    keep = [tmp_path / "x_sr.png", tmp_path / ".tmp-step_0000003-x", tmp_path / "notes.txt"]
    for p in keep:
        p.write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, *(p.name for p in keep)])
    with atomic_path(tmp_path / "z.png") as tmp:  # this process's own temporaries carry its id
        assert tmp.name.startswith(f".tmp-{os.getpid()}-z-")
        tmp.write_bytes(b"z")


def test_check_output_folder_refuses_before_any_work(tmp_path: Path) -> None:
    import pytest

    from diffsr.core.atomic import check_output_folder
    from diffsr.core.errors import DiffsrError

    (tmp_path / "file").write_text("x")
    cases = {tmp_path / "file": "is a file", Path("/dev/null"): "not a folder",
             tmp_path / "file" / "sub": "where a folder must go", Path("/proc/diffsr-out"): "cannot write"}
    for path, words in cases.items():
        with pytest.raises(DiffsrError, match=words) as info:
            check_output_folder(path, "--out")
        assert str(info.value).startswith(f"--out {path}")
    check_output_folder(tmp_path / "new" / "deeper")  # creatable: fine, and nothing was created
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe file is gone


def test_check_output_folder_refuses_an_unwritable_folder(tmp_path: Path) -> None:
    import pytest

    from diffsr.core.atomic import check_output_folder
    from diffsr.core.errors import DiffsrError

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders (the /proc case covers the refusal)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(DiffsrError, match="cannot write"):
            check_output_folder(locked / "out")
    finally:
        locked.chmod(0o700)
