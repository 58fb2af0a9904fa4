"""What ``data.num_workers`` buys: seconds per training step with 0, 1 and 2 worker processes.

    python benchmarks/data_workers.py [--data DIR] [--repeat N] [--threads N]

The demo recipe trains on full-size RoadScene frames (640x512 PNG, read, cropped to 64x64 and
degraded with the infrared chain per item, batch 16): data preparation is a real share of a
CPU step. For each worker count the run trains ``--short`` and ``--long`` steps from scratch;
the difference over the extra steps is the marginal seconds per step (setup, the first batch
and the worker start-up cancel out). Worker counts are interleaved ``--repeat`` times and the
median is reported with the ratio to 0 workers: a ratio against the peer in the same run, not an
absolute speed. Batches are bitwise the same for any worker count
(tests/train/test_batches.py). Results: benchmarks/results/data_workers.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from diffsr.config import load_config  # noqa: E402
from diffsr.train.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "data_workers.json"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "infrared" / "roadscene" / "train"


def _fit_seconds(data: Path, steps: int, workers: int) -> float:
    cfg = load_config("demo", [f"data.train={data}", f"data.num_workers={workers}", f"train.steps={steps}",
                               "train.time_limit=null", "train.log_every=100000",
                               "data.patch_size=64", "data.batch_size=16"])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        train(cfg, out, progress=False)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--short", type=int, default=10)
    ap.add_argument("--long", type=int, default=60)
    ap.add_argument("--workers", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    counts = [int(w) for w in args.workers.split(",")]
    per_step: dict[int, list[float]] = {w: [] for w in counts}
    for r in range(args.repeat):
        for w in counts:
            dt = _fit_seconds(args.data, args.long, w) - _fit_seconds(args.data, args.short, w)
            per_step[w].append(dt / (args.long - args.short))
            print(f"repeat {r}: {w} workers {per_step[w][-1] * 1000:.1f} ms/step", flush=True)
    base = statistics.median(per_step[counts[0]])
    out: dict[str, Any] = {
        "what": "marginal seconds per demo training step (RoadScene 640x512 PNGs, crop 64, batch 16)",
        "threads": args.threads, "cpus": os.cpu_count(), "torch": torch.__version__,
        "load_before": os.getloadavg()[0], "repeat": args.repeat,
        "per_step_s": {str(w): statistics.median(v) for w, v in per_step.items()},
        "all_s": {str(w): v for w, v in per_step.items()},
        "speedup_vs_0": {str(w): base / statistics.median(v) for w, v in per_step.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["speedup_vs_0"]))


if __name__ == "__main__":
    main()
