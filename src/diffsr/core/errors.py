"""User-facing errors.

A :class:`DiffsrError` is a problem the user can fix (a missing file, a bad config key, an
image too small for the scale). ``str(err)`` is one line naming the file or key; the CLI
prints it as ``error: ...`` and exits with code 2. Bugs are never wrapped in these classes:
they keep their tracebacks.
"""

from __future__ import annotations


class DiffsrError(Exception):
    """A problem the user can fix; ``str(err)`` is one line naming the file or key."""


class ConfigError(DiffsrError):
    """An invalid configuration: unknown key, bad value, impossible combination."""


class DataError(DiffsrError):
    """An unreadable, malformed or unsuitable input file or folder."""


class CheckpointError(DiffsrError):
    """A missing, partial, unsafe or incompatible checkpoint."""
