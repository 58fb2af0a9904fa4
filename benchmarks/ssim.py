"""SSIM loss, forward + backward: diffsr.losses.ssim vs pytorch_msssim.ssim.

    python benchmarks/ssim.py [--device cpu|cuda] [--repeat N] [--threads N]

Both use a Gaussian window 11, sigma 1.5, data_range 1.0, float32, gradient w.r.t. the
prediction only (the target is data). The two implementations run interleaved (A, B, A, B, ...)
after a warm-up, so a noisy shared machine slows both alike. The table shows the median
wall-clock milliseconds per call and the median process CPU milliseconds (all threads; less
sensitive to other processes competing for the cores), and the speed-up on each. Results go to
benchmarks/results/ssim.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from diffsr.losses.ssim import ssim

SHAPES = [(8, 1, 256, 256), (8, 3, 256, 256)]
RESULTS = Path(__file__).parent / "results" / "ssim.json"


def _ours(pred: Tensor, target: Tensor) -> Tensor:
    return 1 - ssim(pred, target, data_range=1.0, window=11, sigma=1.5, reduction="none")


def _reference(pred: Tensor, target: Tensor) -> Tensor:
    from pytorch_msssim import ssim as reference_ssim

    return 1 - reference_ssim(pred, target, data_range=1.0, win_size=11, win_sigma=1.5, size_average=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, device: torch.device) -> tuple[float, float]:
    pred = x.clone().requires_grad_(True)
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn(pred, y).sum().backward()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def run(device: torch.device, repeat: int, warmup: int = 3) -> list[dict[str, object]]:
    """Time both implementations on every shape; returns one row per shape."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    names = {"diffsr": _ours, "pytorch_msssim": _reference}
    for shape in SHAPES:
        x = torch.rand(shape, generator=gen).to(device)
        y = (x + 0.1 * torch.randn(shape, generator=gen).to(device)).clamp(0, 1)
        # same value from both (guards against timing two different computations)
        diff = (_ours(x, y) - _reference(x, y)).abs().max().item()
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for i in range(warmup + repeat):
            for name, fn in names.items():
                w, c = _one(fn, x, y, device)
                if i >= warmup:
                    wall[name].append(w)
                    cpu[name].append(c)
        row: dict[str, object] = {"shape": list(shape)}
        for name in names:
            row[f"{name}_ms"] = round(statistics.median(wall[name]) * 1e3, 2)
            row[f"{name}_min_ms"] = round(min(wall[name]) * 1e3, 2)
            row[f"{name}_cpu_ms"] = round(statistics.median(cpu[name]) * 1e3, 2)
        row["speedup"] = round(statistics.median(wall["pytorch_msssim"]) / statistics.median(wall["diffsr"]), 2)
        row["speedup_cpu"] = round(statistics.median(cpu["pytorch_msssim"]) / statistics.median(cpu["diffsr"]), 2)
        row["max_abs_diff"] = diff
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = run(device, args.repeat)
    print(f"SSIM loss forward+backward, {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeat}")
    print(f"{'shape':<16} {'diffsr ms':>10} {'pytorch_msssim ms':>18} {'speedup':>8} "
          f"{'diffsr cpu ms':>14} {'ref cpu ms':>11} {'cpu speedup':>12}")
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])  # type: ignore[attr-defined]
        print(f"{shape:<16} {r['diffsr_ms']:>10} {r['pytorch_msssim_ms']:>18} {r['speedup']:>7}x "
              f"{r['diffsr_cpu_ms']:>14} {r['pytorch_msssim_cpu_ms']:>11} {r['speedup_cpu']:>11}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    run_record = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "repeat": args.repeat,
        "window": 11,
        "sigma": 1.5,
        "data_range": 1.0,
        "results": rows,
    }
    # one record per (device, threads): a 1-thread and a default run can sit side by side
    runs = []
    if RESULTS.is_file():
        try:
            runs = json.loads(RESULTS.read_text()).get("runs", [])
        except (json.JSONDecodeError, AttributeError):
            runs = []
    runs = [r for r in runs if (r.get("device"), r.get("threads")) != (args.device, run_record["threads"])]
    runs.append(run_record)
    RESULTS.write_text(json.dumps({"benchmark": "ssim loss forward+backward", "runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS}")

if __name__ == "__main__":
    main()
