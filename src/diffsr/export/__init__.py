"""Models people can share and deploy: model folders with cards, hub ids, ONNX graphs.

- :func:`export_model`: a run -> a model folder (``model.safetensors``, ``config.yaml``,
  ``calibration.json``, the ``README.md`` card, optionally ``model.onnx``) that
  ``huggingface_hub.upload_folder`` pushes unchanged (``diffsr export``).
- :func:`export_onnx`: a one-step model -> one ONNX graph LR -> SR, checked against PyTorch.
- :class:`OnnxModel`: run such a graph with onnxruntime, with the tiling and I/O of the
  PyTorch path (``diffsr sr --onnx``).

Loading a model folder or ``hf://ORG/NAME[@REV]`` is :func:`diffsr.load_model`'s job
(:mod:`diffsr.core.hub` resolves the id). See docs/models.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["OnnxModel", "export_model", "export_onnx", "model_card"]

_API = {
    "export_model": "diffsr.export.folder",
    "export_onnx": "diffsr.export.onnx",
    "OnnxModel": "diffsr.export.runtime",
    "model_card": "diffsr.export.card",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'diffsr.export' has no attribute {name!r}")
