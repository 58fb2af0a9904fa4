"""Diffusion and flow processes, built by name.

```python
process = PROCESSES.build("flow", shift=3.0)
process = build_process(config.process)   # FlowConfig | DDPMConfig | ResShiftConfig
```
"""

from __future__ import annotations

from typing import Any, Protocol

from diffsr.core.registry import Registry
from diffsr.processes.base import Net, Process, X0Hook
from diffsr.processes.ddpm import DDPM
from diffsr.processes.direct import Direct
from diffsr.processes.flow import RectifiedFlow
from diffsr.processes.rddm import RDDM
from diffsr.processes.resshift import ResShift

PROCESSES: Registry[Process] = Registry("process")
PROCESSES.register("flow")(RectifiedFlow)
PROCESSES.register("ddpm")(DDPM)
PROCESSES.register("resshift")(ResShift)
PROCESSES.register("rddm")(RDDM)
PROCESSES.register("direct")(Direct)


class ProcessSpec(Protocol):
    """What :func:`build_process` reads from a process config (pydantic model)."""

    name: str

    def model_dump(self, *, exclude: Any = None) -> dict[str, Any]: ...


def build_process(cfg: ProcessSpec) -> Process:
    """The process described by a process config: ``name`` picks the class, the other fields are
    its constructor arguments. (Typed structurally: processes sit below ``diffsr.config``.)"""
    return PROCESSES.build(cfg.name, **cfg.model_dump(exclude={"name"}))


__all__ = [
    "DDPM",
    "PROCESSES",
    "RDDM",
    "Net",
    "Process",
    "RectifiedFlow",
    "ResShift",
    "X0Hook",
    "build_process",
]
