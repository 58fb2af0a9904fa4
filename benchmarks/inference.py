"""Inference latency and peak memory: x4 SR of a 128x128 LR image, and tiled SR up to 2048x2048.

    python benchmarks/inference.py [--device cpu|cuda] [--repeat N] [--threads N] [--quick]

Every case calls ``diffsr.sampling.infer.super_resolve`` (bicubic upsampling, codec encode, sampling,
decode, tiling) on a model with random weights, in its OWN subprocess so that one case's
allocator state does not hide another's peak:

- ``demo``: the demo preset (ResShift T 4, Haar level-2 'all', tiny UNet), 1 and 4 steps;
- ``difiisr-dwt-all (net tiny)``: ``load_config("difiisr-dwt-all", ["net.size=tiny"])``,
  ResShift T 15, 15 steps (the preset's 'small' UNet replaced by 'tiny' to keep CPU time sane);
- tiling: the demo model, 1 step, 1024x1024 output as a whole image vs blend tiles of 256
  (overlap 32) and exact tiles of 768, and 2048x2048 with both - the tiled peaks should stay
  near the tiled 1024 figures (exact mode: the sampler's latents are image-sized, the net's
  activations tile-sized).

Latency: the median of ``repeat`` calls after one warm-up call. Peak memory: on CPU the
process's resident set size polled every millisecond during the first (cold) call, minus the
RSS before it (approximate: short peaks can be missed); ``ru_maxrss`` (the process's lifetime
peak, baseline included) is given too. On CUDA: ``torch.cuda.max_memory_allocated``. Results:
benchmarks/results/inference.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from loss_stack import hardware  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "inference.json"

PRESETS = {
    "demo": ("demo", []),
    "difiisr-dwt-all (net tiny)": ("difiisr-dwt-all", ["net.size=tiny"]),
}


def cases(quick: bool) -> list[dict[str, Any]]:
    """The cases to run (one subprocess each)."""
    out = [
        {"model": "demo", "lr": 128, "steps": 1, "tile": 0},
        {"model": "demo", "lr": 128, "steps": 4, "tile": 0},
        {"model": "difiisr-dwt-all (net tiny)", "lr": 128, "steps": 15, "tile": 0},
        {"model": "demo", "lr": 256, "steps": 1, "tile": 256, "mode": "blend"},
        {"model": "demo", "lr": 256, "steps": 1, "tile": 768, "mode": "exact"},
        {"model": "demo", "lr": 256, "steps": 1, "tile": 0},
        {"model": "demo", "lr": 512, "steps": 1, "tile": 256, "mode": "blend"},
        {"model": "demo", "lr": 512, "steps": 1, "tile": 768, "mode": "exact"},
    ]
    if not quick:
        out.append({"model": "demo", "lr": 512, "steps": 1, "tile": 0})
    return out


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_during(call: Callable[[], Any]) -> tuple[int, float]:
    """(peak RSS - RSS before, seconds) of ``call()``, RSS polled every millisecond."""
    base = peak = _rss()
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.001)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        call()
    finally:
        elapsed = time.perf_counter() - start
        done.set()
        thread.join()
    return max(peak, _rss()) - base, elapsed


def child(case: dict[str, Any], device: torch.device, repeat: int) -> dict[str, Any]:
    """Run one case in this process; returns its row."""
    from diffsr.config import load_config
    from diffsr.model import build_model
    from diffsr.sampling.infer import LoadedModel, super_resolve

    preset, overrides = PRESETS[case["model"]]
    cfg = load_config(preset, overrides)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    cfg.sample.tile_mode = case.get("mode", "exact")  # type: ignore[assignment]
    loaded = LoadedModel(model=model, config=cfg, checkpoint=Path("<random weights>"), step=0, ema=False)
    lr = torch.rand(1, cfg.data.channels, case["lr"], case["lr"], generator=torch.Generator().manual_seed(0))
    lr = lr.to(device)

    def call() -> Any:
        out = super_resolve(loaded, lr, steps=case["steps"], tile=case["tile"], overlap=32, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    warm_peak = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        out = call()
        first = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) - base
        method = "cuda max_memory_allocated"
    else:
        out = None
        holder: list[Any] = []
        peak, first = _peak_during(lambda: holder.append(call()))
        out = holder[0]
        method = "cpu rss delta, polled every 1 ms (approximate)"
        # a second call: one-time costs (allocator growth for new shapes, the exact tiler's
        # receptive-field probe, oneDNN caches) are behind it
        warm_peak, _ = _peak_during(call)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {
        **case,
        "preset": preset,
        "overrides": overrides,
        "process": f"{cfg.process.name} T {cfg.process.steps}",
        "net": cfg.net.size,
        "params": sum(p.numel() for p in model.parameters()),
        "output": list(out.shape[-2:]),
        "first_call_s": round(first, 3),
        "latency_s": round(statistics.median(times), 3) if times else round(first, 3),
        "min_latency_s": round(min(times), 3) if times else round(first, 3),
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_warm_mb": round(warm_peak / 2**20, 1) if device.type != "cuda" else None,
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "memory_method": method,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="repeat 1, no whole-image 2048 case")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child), device, args.repeat)))
        return
    if args.quick:
        args.repeat = 1
    meta = hardware()
    rows = []
    base_cmd = [sys.executable, __file__, "--device", args.device, "--repeat", str(args.repeat)]
    if args.threads:
        base_cmd += ["--threads", str(args.threads)]
    for case in cases(args.quick):
        proc = subprocess.run([*base_cmd, "--child", json.dumps(case)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            rows.append({**case, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {r['model']:<27} lr {r['lr']:>4} steps {r['steps']:>2} tile {r['tile'] or '-':>4} "
              f"{r.get('mode', ''):>5}: "
              + (f"{r['latency_s']:.3f} s, peak {r['peak_memory_mb']:.0f} MB (warm {r.get('peak_memory_warm_mb')} MB)"
                 if "error" not in r else r["error"]),
              flush=True)
    meta["loadavg_after"] = list(os.getloadavg())
    whole = {r["lr"]: r for r in rows if not r.get("tile") and r["steps"] == 1 and "error" not in r}
    summary: dict[str, Any] = {}
    def ratios(name: str, num: dict[str, Any], den: dict[str, Any]) -> None:
        """Cold and warm peak-memory ratios num / den."""
        summary[f"{name}_peak"] = round(num["peak_memory_mb"] / den["peak_memory_mb"], 2)
        if num.get("peak_memory_warm_mb") and den.get("peak_memory_warm_mb"):
            summary[f"{name}_warm_peak"] = round(num["peak_memory_warm_mb"] / den["peak_memory_warm_mb"], 2)

    for mode in ("blend", "exact"):
        tiled = {r["lr"]: r for r in rows if r.get("tile") and r.get("mode") == mode and "error" not in r}
        if 256 in tiled and 256 in whole:
            ratios(f"whole_over_{mode}_1024", whole[256], tiled[256])
            summary[f"{mode}_over_whole_latency_1024"] = round(tiled[256]["latency_s"] / whole[256]["latency_s"], 2)
        if 256 in tiled and 512 in tiled:
            ratios(f"{mode}_2048_over_{mode}_1024", tiled[512], tiled[256])
        # the output itself (and the stitching buffers) must grow with the image: 2048^2 float32 = 16 MB
        summary["note"] = ("the stitched output and its weight buffers grow with the image "
                           "(2048x2048 float32 = 16 MB each); the per-tile working set does not")
    result = {**meta, "benchmark": "inference via diffsr.sampling.infer.super_resolve, x4, grayscale, random weights",
              "repeat": args.repeat, "statistic": "median latency after one cold call", "rows": rows,
              "summary": summary}
    print(f"\ninference, {args.device}, threads {args.threads or 'default'}, median of {args.repeat} "
          f"(load {meta['loadavg_before'][0]:.1f})")
    print(f"{'model':<27} {'output':>10} {'steps':>5} {'tile':>5} {'mode':>5} {'latency s':>10} {'cold s':>7} "
          f"{'peak MB':>8} {'warm MB':>8} {'maxrss MB':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<27} lr {r['lr']}: {r['error']}")
            continue
        out = "x".join(str(s) for s in r["output"])
        print(f"{r['model']:<27} {out:>10} {r['steps']:>5} {r['tile'] or '-':>5} {r.get('mode', ''):>5} "
              f"{r['latency_s']:>10.3f} "
              f"{r['first_call_s']:>7.3f} {r['peak_memory_mb']:>8.1f} {r.get('peak_memory_warm_mb') or 0:>8.1f} "
              f"{r['ru_maxrss_mb']:>9.1f}")
    for k, v in summary.items():
        print(f"{k}: {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
