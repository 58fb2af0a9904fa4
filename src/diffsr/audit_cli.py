"""Deprecated location: this module moved to :mod:`diffsr.cli.audit` (this name re-exports it)."""

import importlib
import sys
import warnings

warnings.warn(
    "diffsr.audit_cli is deprecated: import from diffsr.cli.audit",
    DeprecationWarning,
    stacklevel=2,
)
# the old name IS the new module: every name (and any monkeypatch) is shared
sys.modules[__name__] = importlib.import_module("diffsr.cli.audit")
