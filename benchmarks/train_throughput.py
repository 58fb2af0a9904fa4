"""Training throughput (images/s) at 256x256, with and without the loss stack, eager and compiled.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--repeat N] [--threads N] [--quick]

Two denoisers, batch 4, grayscale, 256x256 patches, x4 (ResShift T 4 as in the demo preset):

- ``small/pixel``: the 'small' UNet in pixel space (codec pixel);
- ``tiny/wavelet-all``: the demo's tiny UNet in Haar level-2 'all' space (H/4, 16 channels).

Each runs a full step (forward + loss stack + backward + AdamW; see benchmarks/loss_stack.py)
with the diffusion term only and with l1 + ssim + ffl + edge (gates none), the two interleaved
after a warm-up. Without ``--quick`` the tiny/wavelet-all model is then compiled the way
``train.compile: true`` does (``torch.compile(model.net, dynamic=False)``): the first step's
time (compilation included) and the steady-state median are reported. Results:
benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from loss_stack import TERMS, hardware, make_batch, make_step  # noqa: E402

from diffsr.config import LossesConfig, load_config  # noqa: E402
from diffsr.losses import build_loss_stack  # noqa: E402
from diffsr.model import build_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"

MODELS = {
    "small/pixel": ["codec.name=pixel", "net.size=small"],
    "tiny/wavelet-all": [],  # the demo preset as it is
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_model(name: str, device: torch.device, repeat: int, warmup: int, batch_size: int, size: int,
              compile_repeat: int) -> list[dict[str, Any]]:
    """Rows for one denoiser: diffusion-only and full stack (eager), then compiled if asked."""
    overrides = [f"data.batch_size={batch_size}", f"data.patch_size={size}", *MODELS[name]]
    cfg = load_config("demo", overrides)
    batch = make_batch(batch_size, size, cfg.data.scale, device)
    stacks = {
        "diffusion": [build_loss_stack(LossesConfig(terms=[]), channels=1)],
        "diffusion+l1+ssim+ffl+edge": [build_loss_stack(LossesConfig(terms=TERMS), channels=1)],
    }
    steps = {}
    params = 0
    for key, s in stacks.items():
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        params = sum(p.numel() for p in model.parameters())
        steps[key] = make_step(model, s, batch)
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(warmup + repeat):
        for key, step in steps.items():
            _sync(device)
            start, cstart = time.perf_counter(), time.process_time()
            step(i)
            _sync(device)
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - cstart)
    rows = []
    base = statistics.median(times["diffusion"])
    for key, ts in times.items():
        med = statistics.median(ts)
        rows.append({"model": name, "params": params, "patch": size, "losses": key, "compiled": False,
                     "s_per_step": round(med, 4), "min_s_per_step": round(min(ts), 4),
                     "cpu_s_per_step": round(statistics.median(cpu[key]), 4),
                     "images_per_s": round(batch_size / med, 3), "ratio_to_diffusion": round(med / base, 3)})
    if compile_repeat:
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        model.net = torch.compile(model.net, dynamic=False)  # type: ignore[assignment]
        step = make_step(model, stacks["diffusion"], batch)
        _sync(device)
        start = time.perf_counter()
        step(0)
        _sync(device)
        first = time.perf_counter() - start
        step(1)  # a second untimed step: the backward graph may finish compiling there
        # steady state, interleaved with the eager diffusion-only step (same batch, same load)
        ts, eager = [], []
        for i in range(2, 2 + compile_repeat):
            for fn, into in ((step, ts), (steps["diffusion"], eager)):
                _sync(device)
                start = time.perf_counter()
                fn(i)
                _sync(device)
                into.append(time.perf_counter() - start)
        base = statistics.median(eager)
        from torch._dynamo.utils import counters

        graphs = int(counters["stats"]["unique_graphs"])
        med = statistics.median(ts)
        rows.append({"model": name, "params": params, "patch": size, "losses": "diffusion", "compiled": True,
                     "first_step_s (compile included)": round(first, 2),
                     "s_per_step": round(med, 4), "min_s_per_step": round(min(ts), 4),
                     "images_per_s": round(batch_size / med, 3), "ratio_to_diffusion": round(med / base, 3),
                     "eager_s_per_step_interleaved": round(base, 4), "speedup_vs_eager": round(base / med, 3),
                     "dynamo_unique_graphs": graphs})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--compile-repeat", type=int, default=5, help="steady-state compiled steps (0: skip)")
    parser.add_argument("--quick", action="store_true",
                        help="repeat 1, no torch.compile, small/pixel at 128x128 (about 70 s/step at 256 here)")
    parser.add_argument("--only", choices=list(MODELS), default=None, help="run one denoiser only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeat, args.warmup, args.compile_repeat = 1, 1, 0
    device = torch.device(args.device)
    meta = hardware()
    rows = []
    for name in [args.only] if args.only else MODELS:
        size = min(args.size, 128) if args.quick and name == "small/pixel" else args.size
        rows += run_model(name, device, args.repeat, args.warmup, args.batch, size,
                          args.compile_repeat if name == "tiny/wavelet-all" else 0)
    meta["loadavg_after"] = list(os.getloadavg())
    result = {**meta, "benchmark": "training throughput, ResShift T4 x4, grayscale",
              "batch": args.batch, "patch": args.size, "repeat": args.repeat, "warmup": args.warmup,
              "statistic": "median s/step over repeats (eager variants interleaved)", "rows": rows}
    print(f"training throughput, {args.device}, {torch.get_num_threads()} threads, batch {args.batch}x1x"
          f"{args.size}^2, median of {args.repeat} (load {meta['loadavg_before'][0]:.1f})")
    print(f"{'model':<17} {'patch':>5} {'losses':<27} {'compiled':>8} {'s/step':>8} {'cpu s':>7} {'img/s':>7} "
          f"{'ratio':>6} {'first step s':>12}")
    for r in rows:
        first = r.get("first_step_s (compile included)", "")
        print(f"{r['model']:<17} {r['patch']:>5} {r['losses']:<27} {r['compiled']!s:>8} {r['s_per_step']:>8.3f} "
              f"{r.get('cpu_s_per_step', '')!s:>7} {r['images_per_s']:>7.2f} {r['ratio_to_diffusion']:>6.2f} "
              f"{first!s:>12}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
