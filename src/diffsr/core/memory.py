"""Memory the machine can give this process, and a one-line refusal when a job needs more.

Checked before a large allocation (an image to super-resolve, a training batch), so that a
job that cannot fit stops with ``error: ... needs about 38.2 GiB, 11.7 GiB available`` instead of
being killed by the kernel (or swapping for an hour) after minutes of work.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffsr.core.errors import DiffsrError

GiB = 1024**3


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; 3 * 2**30 -> '3.0 GiB'."""
    for unit, size in (("TiB", 1024**4), ("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_available() -> int | None:
    """The room left under this process's cgroup memory limit (a container's), if it has one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(0, int(limit) - usage)
    return None


def available_bytes(device: str = "cpu") -> int | None:
    """Bytes this process can still allocate on ``device`` ("cpu" or "cuda[:i]"); None if unknown.

    CPU: MemAvailable of /proc/meminfo, lowered to the room under a cgroup (container) limit;
    ``DIFFSR_MEMORY_AVAILABLE`` (bytes) overrides both. CUDA: free memory of the device.
    """
    override = os.environ.get("DIFFSR_MEMORY_AVAILABLE")
    if override:
        return int(float(override))
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    found = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(found) if found else None


def check_memory(need: int, what: str, *, device: str = "cpu", hint: str = "") -> None:
    """Raise DiffsrError when ``need`` bytes exceed what ``device`` has available.

    ``what`` names the job (``"scan.png: x4 super-resolution of 3072x3200 (untiled)"``); the
    message says how much it needs and how much there is, then ``hint``.
    """
    have = available_bytes(device)
    if have is None or need <= have:
        return
    tail = f"; {hint}" if hint else ""
    raise DiffsrError(f"{what} needs about {format_bytes(need)} of memory, {format_bytes(have)} available "
                      f"on {device}{tail}")
