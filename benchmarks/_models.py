"""Models shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is
on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def random_demo_model(overrides: list[str], device: Any = "cpu") -> Any:
    """The ``demo`` preset with ``overrides``, random weights (seed 0), as a ``LoadedModel``.

    Zero-initialised layers (the output head, attention projections) get N(0, 0.05) weights,
    as after training, so tiling and timing see a net whose output depends on its input.
    """
    import torch

    from diffsr.config import load_config
    from diffsr.model import build_model
    from diffsr.sampling.infer import LoadedModel

    cfg = load_config("demo", overrides)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for p in model.net.parameters():
        if not p.any():
            torch.nn.init.normal_(p, std=0.05)
    return LoadedModel(model=model.to(device), config=cfg, checkpoint=Path("<random weights>"), step=0, ema=False)
