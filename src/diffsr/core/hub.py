"""Where a model comes from: a local folder, or ``hf://ORG/NAME[@REV]`` on the Hugging Face Hub.

Every ``--ckpt`` and :func:`diffsr.load_model` go through :func:`resolve_model_source`. A hub id
is fetched with ``huggingface_hub.snapshot_download`` into its usual cache (``HF_HUB_CACHE``,
else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), read from there on later calls, and
never downloaded when ``HF_HUB_OFFLINE=1`` or ``DIFFSR_OFFLINE=1``: then only the cache is
looked at. The cache folder and the offline switches are read when a model is resolved, not
when a module is imported. A model that cannot be had is one :class:`CheckpointError` line
naming the id and the cache folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from diffsr.core.errors import CheckpointError
from diffsr.core.fetch import offline_reason

__all__ = ["HUB_PREFIX", "HubId", "hub_cache_dir", "is_hub_id", "parse_hub_id", "resolve_model_source"]

HUB_PREFIX = "hf://"
# ORG/NAME as the Hub allows them (letters, digits, '-', '_', '.'), then an optional @REVISION
_HUB_ID = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?/?$")


class HubId:
    """A parsed ``hf://ORG/NAME[@REV]``: ``repo`` ('ORG/NAME') and ``revision`` (None: main)."""

    def __init__(self, repo: str, revision: str | None) -> None:
        self.repo, self.revision = repo, revision

    def __str__(self) -> str:
        return HUB_PREFIX + self.repo + (f"@{self.revision}" if self.revision else "")


def is_hub_id(spec: object) -> bool:
    """True when ``spec`` is a string starting with ``hf://``."""
    return isinstance(spec, str) and spec.startswith(HUB_PREFIX)


def parse_hub_id(spec: str) -> HubId:
    """``'hf://org/name@v1'`` -> HubId('org/name', 'v1'); a malformed id is a one-line CheckpointError."""
    match = _HUB_ID.match(spec.strip())
    if match is None:
        raise CheckpointError(f"{spec}: not a Hugging Face model id; expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
    return HubId(match.group("repo"), match.group("revision"))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment now (as ``huggingface_hub`` reads it at import)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def resolve_model_source(spec: str | os.PathLike[str]) -> Path:
    """A local folder for ``spec``: a path as it is, a hub id downloaded into (or found in) the cache."""
    if not is_hub_id(spec):
        return Path(spec)
    hub_id = parse_hub_id(str(spec))
    cache = hub_cache_dir()
    reason = offline_reason()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{hub_id}: hub ids need the huggingface_hub package (pip install huggingface_hub)"
                              ) from None
    from huggingface_hub import errors

    try:
        folder = snapshot_download(hub_id.repo, revision=hub_id.revision, cache_dir=str(cache),
                                   local_files_only=reason is not None, library_name="diffsr")
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"{hub_id}: no revision '{hub_id.revision}' on the Hub (cache: {cache})") from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise CheckpointError(f"{hub_id}: no such model on the Hub, or it needs a login (cache: {cache})") from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):
        why = f"downloads are off ({reason})" if reason else "the Hub could not be reached"
        raise CheckpointError(f"{hub_id}: not in the Hugging Face cache {cache} and {why}; fetch it once with network "
                              f"into that cache (hf download {hub_id.repo}, or any diffsr --ckpt {hub_id})") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as err:
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise CheckpointError(f"{hub_id}: cannot fetch from the Hub ({first}; cache: {cache})") from None
    return Path(folder)
