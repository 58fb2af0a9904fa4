"""Deprecated location: this module moved to :mod:`diffsr.sampling.uncertainty` (this name re-exports it)."""

import importlib
import sys
import warnings

warnings.warn(
    "diffsr.uncertainty is deprecated: import from diffsr.sampling.uncertainty",
    DeprecationWarning,
    stacklevel=2,
)
# the old name IS the new module: every name (and any monkeypatch) is shared
sys.modules[__name__] = importlib.import_module("diffsr.sampling.uncertainty")
