"""Diffusion and flow processes, built by name.

```python
process = PROCESSES.build("flow", shift=3.0)
process = build_process(config.process)   # any registered process's config model
```

Each process module registers its config model and class with :data:`PROCESSES`
(:mod:`diffsr.processes.base`); importing this package registers the built-in ones.
"""

from __future__ import annotations

from typing import Any

from diffsr.processes.base import PROCESSES, Net, Process, X0Hook
from diffsr.processes.ddpm import DDPM, DDPMConfig
from diffsr.processes.direct import Direct, DirectConfig
from diffsr.processes.flow import FlowConfig, RectifiedFlow
from diffsr.processes.rddm import RDDM, RDDMConfig
from diffsr.processes.resshift import ResShift, ResShiftConfig


def build_process(cfg: Any) -> Process:
    """The process described by a registered process config (``cfg.name`` picks the class, the
    other fields are its constructor arguments)."""
    return PROCESSES.build_from(cfg)


__all__ = [
    "DDPM",
    "PROCESSES",
    "RDDM",
    "DDPMConfig",
    "Direct",
    "DirectConfig",
    "FlowConfig",
    "Net",
    "Process",
    "RDDMConfig",
    "RectifiedFlow",
    "ResShift",
    "ResShiftConfig",
    "X0Hook",
    "build_process",
]
