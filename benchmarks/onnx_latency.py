"""ONNX (onnxruntime, CPU) against eager PyTorch: latency of one-step SR, in the same process.

    python benchmarks/onnx_latency.py [--threads N] [--repeat N] [--quick]

For each model (random weights, seeded; the export checks parity <= 1e-4 first):

- ``demo``: the demo preset, ResShift T 4 sampled in one step, Haar level-2 'all', tiny UNet;
- ``edsr``: the EDSR baseline preset (tiny, x4, feed-forward);

and each LR size (64x64 and 128x128, x4 -> 256x256 and 512x512 outputs, batch 1), the two
runtimes are called alternately after a warm-up: ``diffsr.super_resolve`` (eager PyTorch, its own
noise draw, no tiling) and :meth:`diffsr.export.OnnxModel.super_resolve` (the exported graph, the
same noise drawn the same way). Both use ``--threads`` intra-op threads (torch.set_num_threads and
onnxruntime's intra_op_num_threads). Reported: wall-clock medians, process CPU-time medians, and
their ratios (PyTorch / ONNX: > 1 means ONNX is faster), plus max |ONNX - PyTorch| of the outputs.
Results: benchmarks/results/onnx_latency.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from loss_stack import hardware  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "onnx_latency.json"
MODELS = {"demo": ("demo", []), "edsr": ("edsr", [])}


def _timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_model(name: str, folder: Path, sizes: list[int], repeat: int, threads: int) -> list[dict[str, Any]]:
    """Export ``name`` (random weights) to ONNX and time both runtimes on each LR size."""
    import diffsr
    from diffsr.export import OnnxModel, export_onnx
    from diffsr.model import build_model, trainable_state
    from diffsr.train.checkpoint import save_checkpoint

    preset, sets = MODELS[name]
    cfg = diffsr.load_config(preset, sets)
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in trainable_state(model).items()}  # no zero-initialised output layer
    save_checkpoint(folder / name, 1, model=state, ema=state, state={}, config_yaml=cfg.to_yaml(), meta={})
    loaded = diffsr.load_model(folder / name, device="cpu")
    export = export_onnx(loaded, folder / f"{name}.onnx")
    graph = OnnxModel(folder / f"{name}.onnx", threads=threads)
    rows = []
    for size in sizes:
        lr = torch.rand(1, loaded.config.data.channels, size, size, generator=torch.Generator().manual_seed(size))
        with torch.inference_mode():
            run_torch = lambda x=lr: diffsr.super_resolve(loaded, x)  # noqa: E731
            run_onnx = lambda x=lr: graph.super_resolve(x)  # noqa: E731
            diff = float((run_torch() - run_onnx()).abs().max())  # also the warm-up of both
            times: dict[str, list[tuple[float, float]]] = {"torch": [], "onnx": []}
            for _ in range(repeat):  # interleaved: both see the same machine load
                times["torch"].append(_timed(run_torch))
                times["onnx"].append(_timed(run_onnx))
        med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}
        rows.append({
            "model": name, "lr": size, "output": size * loaded.scale, "repeat": repeat,
            "torch_wall_s": med["torch"][0], "onnx_wall_s": med["onnx"][0],
            "torch_cpu_s": med["torch"][1], "onnx_cpu_s": med["onnx"][1],
            "ratio_wall": med["torch"][0] / med["onnx"][0], "ratio_cpu": med["torch"][1] / med["onnx"][1],
            "max_abs_diff": diff, "export_parity": export.parity,
        })
        print(f"{name:5s} {size}->{size * loaded.scale}: torch {med['torch'][0]:.3f} s, onnx {med['onnx'][0]:.3f} s "
              f"(x{rows[-1]['ratio_wall']:.2f} wall, x{rows[-1]['ratio_cpu']:.2f} cpu), max diff {diff:.1e}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="64x64 LR only, 3 repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [64] if args.quick else [64, 128]
    repeat = 3 if args.quick else args.repeat
    info = hardware()
    import onnxruntime

    info["onnxruntime"] = onnxruntime.__version__
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            rows += bench_model(name, Path(tmp), sizes, repeat, args.threads)
    info["loadavg_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"hardware": info, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
