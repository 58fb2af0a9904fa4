"""Deprecated location: this module moved to :mod:`diffsr.train.distill` (this name re-exports it)."""

import importlib
import sys
import warnings

warnings.warn(
    "diffsr.distill is deprecated: import from diffsr.train.distill",
    DeprecationWarning,
    stacklevel=2,
)
# the old name IS the new module: every name (and any monkeypatch) is shared
sys.modules[__name__] = importlib.import_module("diffsr.train.distill")
