"""Memory soak: does the resident set size grow over a long CPU training run?

    python benchmarks/soak.py [--steps 2000] [--every 50] [--threads 1] [--out benchmarks/results/soak.json]

Trains the tiny demo preset (patch 32, batch 4, UNet width 16, ResShift T 2, Haar level-2
'all' codec) for ``--steps`` optimiser steps with the real loop: TensorBoard logging every 10
steps, a checkpoint every 250 (keep 2), validation every 500, EMA on. The process's RSS is
sampled every ``--every`` steps (from /proc, no dependency). Reported:

- the RSS curve (step, MB), its value after warm-up (step 200), at the end, and the maximum;
- growth: end minus warm-up, and the least-squares slope over the second half in MB per 1000
  steps (a leak shows as a steady positive slope; allocator noise as a few MB either way).

Not part of the test suite (it takes minutes). Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "soak.json"
TINY = [
    "data.patch_size=32", "data.batch_size=4", "net.width=16", "net.channel_mult=[1,2]",
    "train.log_every=10", "train.time_limit=null", "train.warmup_steps=20", "sample.steps=2",
    "process.steps=2", "train.ckpt_every=250", "train.keep_last=2", "train.val_every=500",
    "data.val_images=2",
]


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def soak(steps: int, every: int, threads: int, run_dir: Path) -> dict[str, Any]:
    from diffsr.config import load_config
    from diffsr.train.trainer import Trainer

    samples: list[tuple[int, float, float]] = []
    start = time.perf_counter()

    class Sampled(Trainer):
        def train_step(self, step: int) -> tuple[Any, float, bool]:
            out = super().train_step(step)
            if (step + 1) % every == 0 or step == 0:
                samples.append((step + 1, rss_mb(), time.perf_counter() - start))
            return out

    cfg = load_config("demo", [*TINY, f"train.steps={steps}", f"train.threads={threads}"])
    samples.append((0, rss_mb(), 0.0))
    result = Sampled(cfg, run_dir, progress=False).fit()
    curve = np.array([(s, m) for s, m, _ in samples], dtype=np.float64)
    warm_step = min(200, steps // 4)
    warm = float(curve[curve[:, 0] >= warm_step][0, 1])
    half = curve[curve[:, 0] >= steps / 2]
    slope = float(np.polyfit(half[:, 0], half[:, 1], 1)[0] * 1000) if len(half) >= 3 else float("nan")
    return {
        "steps": result.step,
        "seconds": round(time.perf_counter() - start, 1),
        "steps_per_second": round(result.steps_per_second, 2),
        "skipped_steps": result.skipped_steps,
        "rss_mb": {
            "start": round(float(curve[0, 1]), 1),
            f"after_warmup_step_{warm_step}": round(warm, 1),
            "end": round(float(curve[-1, 1]), 1),
            "max": round(float(curve[:, 1].max()), 1),
            "growth_after_warmup": round(float(curve[-1, 1]) - warm, 1),
            "slope_second_half_mb_per_1000_steps": round(slope, 2),
        },
        "curve": [{"step": int(s), "rss_mb": round(m, 1), "seconds": round(t, 1)} for s, m, t in samples],
        "config": TINY + [f"train.steps={steps}", f"train.threads={threads}"],
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=50, help="sample RSS every N steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="diffsr-soak-") as tmp:
        report = soak(args.steps, args.every, args.threads, Path(tmp) / "run")
    rss = report["rss_mb"]
    print(f"{report['steps']} steps in {report['seconds']} s ({report['steps_per_second']} it/s)")
    for point in report["curve"][:: max(1, len(report["curve"]) // 20)]:
        print(f"  step {point['step']:>6}  RSS {point['rss_mb']:8.1f} MB")
    print("RSS MB: " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
