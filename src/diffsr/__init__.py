"""diffsr: diffusion and flow super-resolution for medical, infrared and natural images.

Imports are lazy: ``import diffsr`` loads nothing heavy. The everyday API is at the top::

    import diffsr
    cfg = diffsr.load_config("demo", ["train.steps=200"])
    diffsr.fit(cfg, "runs/demo")
    model = diffsr.load_model("runs/demo")
    sr = diffsr.super_resolve(model, lr)

and every component in its subpackage (``from diffsr.codecs import WaveletCodec``,
``from diffsr.losses import LossStack``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: top-level name -> the module that defines it (and the name there, when it differs).
#: Training is ``fit``: a top-level ``train`` would be shadowed by the ``diffsr.train`` subpackage
#: as soon as anything imports it.
_API = {
    "load_config": "diffsr.config",
    "Config": "diffsr.config",
    "fit": "diffsr.train.trainer:train",
    "Trainer": "diffsr.train.trainer",
    "load_model": "diffsr.sampling.infer",
    "super_resolve": "diffsr.sampling.infer",
    "build_model": "diffsr.model",
    "SRModel": "diffsr.model",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, _, attr = _API[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffsr' has no attribute {name!r}")
