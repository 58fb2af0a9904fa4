"""Cost of a model: parameters, FLOPs, latency and peak memory per image.

``benchmark_model(net, [(1, 8, 64, 64), (1,)], steps=15)`` calls ``net(*inputs)`` on random
inputs of those shapes (float inputs of ndim >= 2 are random normal; 1-D inputs, such as a
timestep, are uniform in [0, 1)). One *forward* is one network evaluation; a sampler runs
``steps`` of them per image, so per-image numbers are ``per forward x steps / batch``.

- FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` on one forward (a multiply-add
  counts 2; element-wise ops, normalisation and activations are not counted).
- latency: median over ``repeat`` timed forwards after ``warmup`` untimed ones, CUDA
  synchronised, times ``steps``, divided by the batch size.
- peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one forward minus the
  memory allocated before it (exact for the caching allocator). On CPU the process's
  resident set size is polled every millisecond during one forward and the baseline
  subtracted: approximate (allocator caching and short peaks are missed or over-counted).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffsr.core.atomic import atomic_write_text

Shape = Sequence[int]


def _inputs(
    shapes: Sequence[Shape] | Mapping[str, Shape], device: torch.device, dtype: torch.dtype, seed: int
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)

    def make(shape: Shape) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        x = torch.rand(shape, generator=gen) if len(shape) <= 1 else torch.randn(shape, generator=gen)
        return x.to(device=device, dtype=dtype)

    if isinstance(shapes, Mapping):
        return [], {k: make(s) for k, s in shapes.items()}
    return [make(s) for s in shapes], {}


def count_parameters(model: Any) -> int:
    """Number of parameters of an ``nn.Module`` (0 for a plain function)."""
    if isinstance(model, nn.Module):
        return sum(p.numel() for p in model.parameters())
    return 0


def count_flops(
    fn: Callable[..., Any], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)`` (multiply-add = 2), via FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn(*args, **(kwargs or {}))
    return int(counter.get_total_flops())


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_peak_bytes(call: Callable[[], Any]) -> int:
    """Approximate extra resident memory of ``call()`` (RSS polled every ms; ru_maxrss fallback)."""
    base = _rss_bytes()
    if base is None:  # no /proc: ru_maxrss (kB on Linux) only grows past an earlier peak
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        call()
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    peak = base
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            rss = _rss_bytes()
            if rss is not None:
                peak = max(peak, rss)
            time.sleep(0.001)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        call()
    finally:
        done.set()
        thread.join()
    rss = _rss_bytes()
    return max(0, max(peak, rss or 0) - base)


def benchmark_model(
    model: nn.Module | Callable[..., Any],
    input_shapes: Sequence[Shape] | Mapping[str, Shape],
    *,
    steps: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    repeat: int = 5,
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Parameters, FLOPs, latency and peak memory of ``model`` per image (see the module doc).

    input_shapes: one shape per positional argument (or name -> shape for keyword
        arguments); the first dimension of the first input is the batch size.
    steps: network evaluations per image (sampling steps).
    Returns a row: name, device, steps, batch, params, flops_per_forward, flops_per_image,
    latency_s_per_forward, latency_s_per_image, peak_memory_bytes, memory_method.
    """
    if steps < 1 or repeat < 1 or warmup < 0:
        raise ValueError(f"steps {steps} and repeat {repeat} must be >= 1, warmup {warmup} >= 0")
    device = torch.device(device)
    args, kwargs = _inputs(input_shapes, device, dtype, seed)
    first = args[0] if args else next(iter(kwargs.values()))
    batch = int(first.shape[0]) if first.ndim else 1
    if isinstance(model, nn.Module):
        model = model.to(device).eval()

    def call() -> Any:
        with torch.no_grad():
            return model(*args, **kwargs)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    flops = count_flops(model, args, kwargs)
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    latency = statistics.median(times)

    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        call()
        sync()
        peak = torch.cuda.max_memory_allocated(device) - base
        memory_method = "cuda max_memory_allocated"
    else:
        peak = _cpu_peak_bytes(call)
        memory_method = "cpu rss delta (approximate)"

    return {
        "name": name or type(model).__name__,
        "device": str(device),
        "steps": steps,
        "batch": batch,
        "params": count_parameters(model),
        "flops_per_forward": flops,
        "flops_per_image": flops * steps / batch,
        "latency_s_per_forward": latency,
        "latency_s_per_image": latency * steps / batch,
        "peak_memory_bytes": int(peak),
        "memory_method": memory_method,
    }


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`benchmark_model` rows."""
    lines = [
        "| model | device | steps | params (M) | GFLOPs / image | ms / image | peak memory (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['device']} | {r['steps']} | {r['params'] / 1e6:.3f} | "
            f"{r['flops_per_image'] / 1e9:.3f} | {r['latency_s_per_image'] * 1e3:.2f} | "
            f"{r['peak_memory_bytes'] / 2**20:.1f} |"
        )
    return "\n".join(lines)


def write_json(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the rows as JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps([dict(r) for r in rows], indent=2) + "\n")
    return path
