"""Benchmark: level-2 wavelet round trips, diffsr vs PyWavelets, ptwt and pytorch_wavelets.

    python benchmarks/wavelet_codec.py [--device cpu|cuda] [--repeat N] [--quick]

Times ``waverec2(wavedec2(x))`` (float32, level 2) for Haar and db2 on [16, 3, 256, 256] and
[4, 1, 512, 512]: the median of N runs after warm-up, default ``torch.set_num_threads``.
Peers and their boundary modes:

- PyWavelets: ``pywt.wavedec2`` / ``waverec2`` with ``mode="periodization"`` looped over
  images and channels (on CUDA the timing includes the device <-> host copies);
- ptwt: ``ptwt.wavedec2`` / ``waverec2``; ptwt has no periodization mode. For Haar with even
  sizes ``mode="zero"`` gives exactly the periodization coefficients (no boundary overlap);
  for db2 ``mode="periodic"`` is PyWavelets' "periodic" (N/2 + 1 coefficients per axis), the
  closest mode, so the db2 comparison is not like-for-like in output size;
- pytorch_wavelets: ``DWTForward`` / ``DWTInverse`` with ``mode="periodization"``.

Also forward+backward of the round trip for the torch implementations, the diffsr
``WaveletCodec`` (layout ``all``) encode+decode, and on CUDA a plain ``x.clone()`` as the
memory-bandwidth floor. Writes ``benchmarks/results/wavelet_codec.json`` (``_cuda`` /
``_t<threads>`` suffixes for --device cuda / --threads). The machine's load average is recorded:
on a shared CPU, other processes inflate multi-threaded timings (``min_ms`` is less affected).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from diffsr.codecs.wavelet import WaveletCodec, wavedec2, waverec2

SHAPES = [(16, 3, 256, 256), (4, 1, 512, 512)]
WAVELETS = ["haar", "db2"]
LEVELS = 2
RESULTS = Path(__file__).parent / "results" / "wavelet_codec.json"


@functools.cache
def import_pytorch_wavelets() -> tuple[type, type, str]:
    """DWTForward, DWTInverse and a note on how they were imported."""
    try:
        from pytorch_wavelets import DWTForward, DWTInverse

        return DWTForward, DWTInverse, ""
    except ModuleNotFoundError as err:
        if err.name != "pkg_resources":
            raise
    # pytorch_wavelets/__init__ imports its DTCWT module, which needs pkg_resources (gone from
    # recent setuptools); the DWT modules do not, so load them under a bare package object
    for name in [m for m in sys.modules if m == "pytorch_wavelets" or m.startswith("pytorch_wavelets.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("pytorch_wavelets")
    assert spec is not None and spec.submodule_search_locations is not None
    package = types.ModuleType("pytorch_wavelets")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["pytorch_wavelets"] = package
    from pytorch_wavelets.dwt.transform2d import DWTForward, DWTInverse

    return DWTForward, DWTInverse, "DWT modules imported directly (package __init__ needs pkg_resources)"


def timed(fns: list[Callable[[], object]], repeat: int, warmup: int, cuda: bool) -> list[tuple[float, float]]:
    """(median, min) wall time in ms of each of ``fns``, timed round-robin.

    Interleaving the implementations (one call of each per round) spreads any change in the
    machine's load evenly over them, so the ratios stay fair on a shared CPU.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, bucket in zip(fns, times, strict=True):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            bucket.append(time.perf_counter() - start)
    return [(1e3 * statistics.median(t), 1e3 * min(t)) for t in times]


def make_cases(x: torch.Tensor, wavelet: str) -> dict[str, dict[str, object]]:
    """name -> {"round_trip": fn(x) -> y, "mode": str, "torch": bool}."""
    import ptwt
    import pywt

    dwt_forward, dwt_inverse, pw_note = import_pytorch_wavelets()
    device = x.device

    def ours(t: torch.Tensor) -> torch.Tensor:
        return waverec2(wavedec2(t, wavelet, LEVELS), wavelet)

    def pywt_loop(t: torch.Tensor) -> torch.Tensor:
        arr = t.detach().cpu().numpy()
        out = np.empty_like(arr)
        for b in range(arr.shape[0]):
            for c in range(arr.shape[1]):
                coeffs = pywt.wavedec2(arr[b, c], wavelet, mode="periodization", level=LEVELS)
                out[b, c] = pywt.waverec2(coeffs, wavelet, mode="periodization")
        return torch.from_numpy(out).to(device)

    ptwt_mode = "zero" if wavelet == "haar" else "periodic"

    def ptwt_rt(t: torch.Tensor) -> torch.Tensor:
        coeffs = ptwt.wavedec2(t, wavelet, mode=ptwt_mode, level=LEVELS)
        y = ptwt.waverec2(coeffs, wavelet)
        return y[..., : t.shape[-2], : t.shape[-1]]

    fwd = dwt_forward(J=LEVELS, wave=wavelet, mode="periodization").to(device)
    inv = dwt_inverse(wave=wavelet, mode="periodization").to(device)

    def pw_rt(t: torch.Tensor) -> torch.Tensor:
        return inv(fwd(t))

    codec = WaveletCodec(wavelet, LEVELS, "all", channels=x.shape[1])

    def codec_rt(t: torch.Tensor) -> torch.Tensor:
        return codec.decode(codec.encode(t))

    ptwt_note = (
        "mode='zero' (identical to periodization for Haar on even sizes)"
        if wavelet == "haar"
        else "mode='periodic' (pywt 'periodic': N/2+1 coefficients; no periodization in ptwt)"
    )
    return {
        "diffsr": {"fn": ours, "mode": "periodization", "torch": True},
        "diffsr codec 'all'": {"fn": codec_rt, "mode": "periodization, [0,1] -> 2x-1", "torch": True},
        "pywt": {"fn": pywt_loop, "mode": "periodization (loop over B*C)", "torch": False},
        "ptwt": {"fn": ptwt_rt, "mode": ptwt_note, "torch": True},
        "pytorch_wavelets": {"fn": pw_rt, "mode": "periodization " + pw_note, "torch": True},
    }


def run(device: str, repeat: int, warmup: int) -> dict[str, object]:
    cuda = device == "cuda"
    load_before = os.getloadavg()
    rows: list[dict[str, object]] = []
    for shape in SHAPES:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
        for wavelet in WAVELETS:
            cases = make_cases(x, wavelet)
            reference = cases["pywt"]["fn"](x)  # type: ignore[operator]
            tasks: list[tuple[dict[str, object], Callable[[], object]]] = []
            meta = {"shape": list(shape), "wavelet": wavelet}
            if cuda:
                tasks.append((meta | {"impl": "x.clone()", "pass": "copy", "mode": "copy"}, x.clone))
            for name, case in cases.items():
                fn: Callable[[torch.Tensor], torch.Tensor] = case["fn"]  # type: ignore[assignment]
                with torch.no_grad():
                    y = fn(x)
                row = meta | {"impl": name, "mode": case["mode"]}
                errors = {
                    "max_abs_err_vs_input": (y - x).abs().max().item(),
                    "max_abs_err_vs_pywt": (y - reference).abs().max().item(),
                }

                def forward(fn: Callable[[torch.Tensor], torch.Tensor] = fn, x: torch.Tensor = x) -> None:
                    with torch.no_grad():
                        fn(x)

                tasks.append((row | {"pass": "forward"} | errors, forward))
                if case["torch"]:
                    xg = x.clone().requires_grad_(True)
                    grad = torch.ones_like(x)

                    def fwd_bwd(
                        fn: Callable[[torch.Tensor], torch.Tensor] = fn,
                        xg: torch.Tensor = xg,
                        grad: torch.Tensor = grad,
                    ) -> None:
                        xg.grad = None
                        fn(xg).backward(grad)

                    tasks.append((row | {"pass": "forward+backward"}, fwd_bwd))
            timings = timed([fn for _, fn in tasks], repeat, warmup, cuda)
            for (row, _), (median, best) in zip(tasks, timings, strict=True):
                rows.append(row | {"ms": median, "min_ms": best})
    # ratios: peer time / diffsr time for the same shape, wavelet and pass
    ours = {(tuple(r["shape"]), r["wavelet"], r["pass"]): r for r in rows if r["impl"] == "diffsr"}
    for r in rows:
        key = (tuple(r["shape"]), r["wavelet"], r["pass"])
        if r["impl"] != "diffsr" and key in ours:
            r["peer_over_diffsr"] = r["ms"] / ours[key]["ms"]  # type: ignore[operator]
            r["peer_over_diffsr_min"] = r["min_ms"] / ours[key]["min_ms"]  # type: ignore[operator]
    return {
        "benchmark": "wavelet level-2 round trip (wavedec2 + waverec2), float32",
        "device": device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeat": repeat,
        "warmup": warmup,
        "statistic": "median ms (min_ms: fastest run)",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "rows": rows,
    }


def print_table(result: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{result['benchmark']} on {result['device']} ({result['threads']} threads, "
        f"median of {result['repeat']}; load {result['loadavg_before'][0]:.1f})"  # type: ignore[index]
    )
    for col in ("shape", "wavelet", "impl", "pass", "ms", "min ms", "peer/diffsr", "max err vs pywt"):
        table.add_column(col, justify="left" if col in ("shape", "wavelet", "impl", "pass") else "right")
    for r in result["rows"]:  # type: ignore[union-attr]
        ratio = r.get("peer_over_diffsr")
        err = r.get("max_abs_err_vs_pywt")
        table.add_row(
            "x".join(map(str, r["shape"])),
            r["wavelet"],
            r["impl"],
            r["pass"],
            f"{r['ms']:.2f}",
            f"{r['min_ms']:.2f}",
            f"{ratio:.1f}x" if ratio is not None else "",
            f"{err:.1e}" if err is not None else "",
        )
    Console(width=150).print(table)
    for name in ("ptwt", "pytorch_wavelets"):
        rows = [r for r in result["rows"] if r["impl"] == name]  # type: ignore[union-attr]
        if rows:
            modes = dict.fromkeys(f"{r['wavelet']}: {r['mode']}" for r in rows)
            Console(width=150).print(f"{name}: " + "; ".join(modes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    repeat, warmup = (3, 1) if args.quick else (args.repeat, 3)
    result = run(args.device, repeat, warmup)
    print_table(result)
    suffix = ("_cuda" if args.device == "cuda" else "") + (f"_t{args.threads}" if args.threads else "")
    path = RESULTS.with_name(f"{RESULTS.stem}{suffix}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
