"""Sampling: samplers, inference on files, data consistency, uncertainty.

Submodules are imported on first use (``diffsr.sampling.samplers`` depends only on the
processes and is used by the model; the others sit above the model in the import order)::

    from diffsr.sampling.samplers import sample
    from diffsr.sampling.infer import load_model, super_resolve
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = ("samplers", "infer", "consistency", "uncertainty")


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        module = importlib.import_module(f"diffsr.sampling.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'diffsr.sampling' has no attribute {name!r}")
