"""Downloads on first use: the offline switches and one verified, atomic file download.

Every download diffsr makes (LPIPS weights, a model from the Hugging Face Hub) asks
:func:`offline` first: ``DIFFSR_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` forbids it, and the caller
then raises a one-line error naming the file, the cache folder and the command that fetches it.
:func:`download_file` writes through a temporary name in the destination folder and checks the
SHA-256 before the rename, so an interrupted or corrupted download never leaves a file that
looks complete. ``file://`` URLs work like any other (tests use them; so can a mirror on a
shared file system).
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from diffsr.core.atomic import atomic_path
from diffsr.core.errors import DiffsrError

__all__ = ["OFFLINE_VARIABLES", "download_file", "offline", "offline_reason"]

log = logging.getLogger(__name__)

#: environment variables that forbid downloads when set to 1 / true / yes / on
OFFLINE_VARIABLES = ("DIFFSR_OFFLINE", "HF_HUB_OFFLINE")

_CHUNK = 1 << 20


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_reason() -> str | None:
    """The variable that forbids downloads, e.g. ``'DIFFSR_OFFLINE=1'`` (None: downloads are allowed).

    Read from the environment at every call (not at import), so a test or a job script can set it late.
    """
    for name in OFFLINE_VARIABLES:
        if _truthy(os.environ.get(name)):
            return f"{name}={os.environ[name]}"
    return None


def offline() -> bool:
    """True when ``DIFFSR_OFFLINE`` or ``HF_HUB_OFFLINE`` forbids downloads."""
    return offline_reason() is not None


def download_file(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None, what: str = "file",
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (atomically) and return ``dest``.

    sha256: the expected digest, or a prefix of it (torchvision names its files with the first 8
    hex digits); a mismatch is a :class:`DiffsrError` and nothing is written. what: how the
    messages name the file. Refused when :func:`offline`. Logs one notice line before it starts.
    """
    dest = Path(dest)
    reason = offline_reason()
    if reason is not None:
        raise DiffsrError(f"{what}: not downloading {url} ({reason}); put the file at {dest}")
    log.warning("downloading %s: %s -> %s (once; set DIFFSR_OFFLINE=1 to forbid downloads)", what, url, dest)
    digest = hashlib.sha256()
    try:
        with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=timeout) as response, \
                open(tmp, "wb") as out:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            if sha256 is not None and not digest.hexdigest().startswith(sha256.lower()):
                raise DiffsrError(f"{what}: {url} has SHA-256 {digest.hexdigest()[:16]}..., expected "
                                  f"{sha256[:16]}...; nothing written to {dest}")
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason_text = getattr(err, "reason", None) or err
        first = str(reason_text).splitlines()[0][:160] if str(reason_text) else type(err).__name__
        raise DiffsrError(f"{what}: download of {url} failed ({first}); put the file at {dest}") from None
    return dest
