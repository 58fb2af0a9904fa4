"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename.

A reader never sees a half-written file: either the old file or the complete new one.
Temporary names are ``.tmp-<pid>-<name>-<random>`` (``.old-<pid>-...`` for a folder being
replaced): a process killed mid-write leaves one behind, and :func:`remove_stale_temporaries`
removes those whose process no longer runs. :func:`check_output_folder` checks an output
folder before any compute (a file in the way, no write permission).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left untouched. The temporary
    name keeps the suffix (so writers that infer the format from it work) and starts with
    '.tmp-' so partial files are recognisable and never taken for real outputs. The final
    file gets mode ``0o666 & ~umask``, like a file created with ``open()``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-{path.stem}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``path``; on success it replaces ``path``.

    The temporary folder starts with '.tmp-'; on any error it is removed and ``path`` is left
    untouched. An existing ``path`` folder is replaced as a whole (files of an earlier output
    that the new one does not contain are removed with it). The folder gets mode
    ``0o777 & ~umask``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-{path.name}-", dir=path.parent))
    old: Path | None = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".old-{os.getpid()}-{path.name}-", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists() and (old / path.name).exists():
            os.replace(old / path.name, path)  # put the earlier output back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` then rename the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


_TEMPORARY = re.compile(r"^\.(tmp|old)-(\d+)-")


def _running(pid: int) -> bool:
    """True when a process ``pid`` exists (it may belong to another user)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the ``.tmp-<pid>-*`` / ``.old-<pid>-*`` files and folders in ``folder`` left by
    writers of this module whose process has ended (killed mid-write); returns what was removed.

    Temporaries of running processes (another ``diffsr sr`` writing into the same folder) stay.
    Checkpoint temporaries (``.tmp-step_*``, no process id) are the checkpoint writer's business.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or _running(int(match.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def check_output_folder(path: str | os.PathLike[str], option: str = "--out") -> None:
    """Raise DiffsrError (one line) unless ``path`` is, or can be created as, a writable folder.

    Checked before any compute: ``path`` an existing file or device (/dev/null), a file where
    one of its parent folders must go, or a folder this process cannot write into. Nothing is
    created: writability is probed with a temporary file in the nearest existing folder.
    """
    from diffsr.core.errors import DiffsrError

    path = Path(path)
    if path.exists() and not path.is_dir():
        kind = "a file" if path.is_file() else "not a folder (a device, FIFO or socket)"
        raise DiffsrError(f"{option} {path}: is {kind}; give a folder")
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: creating the folder would fail
            raise DiffsrError(f"{option} {path}: {probe} is a broken symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise DiffsrError(f"{option} {path}: {probe} is a file, where a folder must go")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-probe-", dir=probe)
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise DiffsrError(f"{option} {path}: cannot write in {probe} ({why})") from None
    os.close(fd)
    os.unlink(tmp)
