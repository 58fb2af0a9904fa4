"""Exact tiling: its cost against the whole image, the cache between passes, and the receptive-field probe.

    python benchmarks/exact_tiling.py [--threads 1] [--lr 512] [--tiles 768,1024,1536] [--repeat 2] [--full]

- **tiling**: ``super_resolve`` (1 step, x4) of an ``lr`` x ``lr`` image with the demo preset
  (tiny UNet, 17 GroupNorm layers) and with ``net.name=resnet`` (no GroupNorm: one pass), whole
  image vs exact tiles, each tile size with the cache (``sample.tile_cache``, default budget)
  and, for the first tile size, without it (every pass recomputed, the previous behaviour). The
  variants run interleaved in one process after a warm-up (the uncached one once: it is slow);
  the table gives median seconds, the ratio to the whole image of the same model, the cache's
  peak (exact byte count of what it kept) and the peak RSS growth during the call (polled every
  millisecond, approximate). Every tiled output is checked against the whole image (max abs diff).
- **probe**: the receptive-field probe (``nets.receptive_field.receptive_radius``) against the
  previous algorithm (full convolutions on a positive-weight copy, square images, the sampling
  batch), reimplemented here as the reference: same radius, seconds for each. ``--full`` adds
  the base UNet and EDSR base to the reference side (minutes each on one core).

Results: benchmarks/results/exact_tiling.json; verdict in RESULTS.md section 5.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from _models import random_demo_model  # noqa: E402
from inference import _peak_during  # noqa: E402
from loss_stack import hardware  # noqa: E402
from torch import Tensor, nn  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "exact_tiling.json"


def tiling(lr_size: int, tiles: list[int], repeat: int) -> list[dict[str, Any]]:
    """Whole vs exact tiles (with and without the cache) for the demo UNet and the resnet denoiser."""
    import diffsr.nets.exact_tiling as et
    from diffsr.sampling.infer import super_resolve

    lr = torch.rand(1, 1, lr_size, lr_size, generator=torch.Generator().manual_seed(0))
    caches: list[int] = []
    call = et.TiledUNet.__call__

    def recording(self: Any, *args: Any) -> Tensor:
        try:
            return call(self, *args)
        finally:
            caches.append(self.tiler.cache.peak)

    et.TiledUNet.__call__ = recording  # type: ignore[method-assign]
    rows = []
    for model, overrides in (("demo (tiny UNet)", []), ("demo, net resnet tiny", ["net.name=resnet"])):
        loaded = random_demo_model(overrides)
        variants: list[tuple[str, int, int | None, int]] = [("whole", 0, None, repeat)]
        for k, tile in enumerate(tiles):
            variants.append((f"exact {tile}, cache", tile, None, repeat))
            if k == 0 and "UNet" in model:
                variants.append((f"exact {tile}, no cache", tile, 0, 1))
        super_resolve(loaded, lr[..., :64, :64], tile=0, steps=1)  # warm-up
        default_cache = loaded.config.sample.tile_cache
        results: dict[str, dict[str, Any]] = {name: {"times": []} for name, *_ in variants}
        whole_out = None
        for r in range(repeat):
            for name, tile, cache, n in variants:
                if r >= n:
                    continue
                loaded.config.sample.tile_cache = default_cache if cache is None else cache
                caches.clear()
                holder: list[Tensor] = []
                peak, seconds = _peak_during(lambda t=tile, h=holder, m=loaded: h.append(
                    super_resolve(m, lr, tile=t or None, steps=1, seed=0)))
                row = results[name]
                row["times"].append(seconds)
                row["rss_peak_mb"] = max(row.get("rss_peak_mb", 0.0), peak / 2**20)
                row["cache_peak_mb"] = max(caches) / 2**20 if caches else 0.0
                if name == "whole":
                    whole_out = holder[0]
                else:
                    row["max_abs_diff"] = float((holder[0] - whole_out).abs().max())  # type: ignore[operator]
                print(f"  {model} {name}: {seconds:.2f} s", flush=True)
        base = statistics.median(results["whole"]["times"])
        for name, tile, cache, _ in variants:
            row = results[name]
            med = statistics.median(row["times"])
            rows.append({"model": model, "variant": name, "tile": tile, "cache_budget_mb":
                         None if not tile else (default_cache if cache is None else cache),
                         "seconds": round(med, 3), "ratio_to_whole": round(med / base, 2),
                         "cache_peak_mb": round(row["cache_peak_mb"], 1), "rss_peak_mb": round(row["rss_peak_mb"], 1),
                         "max_abs_diff": row.get("max_abs_diff"), "runs": len(row["times"])})
    et.TiledUNet.__call__ = call  # type: ignore[method-assign]
    return rows


def _old_radius(fn: Callable[..., Tensor], shapes: list[tuple[int, int]], *, multiple: int, scale: int,
                net: nn.Module) -> int:
    """The previous probe: full convolutions of a positive-weight copy on square images."""
    from diffsr.nets.exact_tiling import _Engine

    probe_net = copy.deepcopy(net).float()
    with torch.no_grad():
        for module in probe_net.modules():
            for pname, p in module.named_parameters(recurse=False):
                if isinstance(module, nn.Linear) or pname.endswith("bias"):
                    p.zero_()
                elif p.ndim > 1:
                    p.fill_(math.prod(p.shape[2:]) / p[0].numel())
                else:
                    p.fill_(1.0)
    size = 8 * multiple
    while True:
        c0 = (size // 2 // multiple) * multiple
        inputs = []
        for b, c in shapes:
            x = torch.zeros((b, c, size, size))
            x[..., c0 : c0 + multiple, c0 : c0 + multiple] = 1.0
            inputs.append(x)
        with torch.no_grad(), _Engine(probe_net).probing():
            out = fn(probe_net, *inputs)
        support = (out != 0).flatten(0, -3).any(0)
        ys = support.any(1).nonzero().flatten() // scale
        xs = support.any(0).nonzero().flatten() // scale
        if ys.min() > 0 and xs.min() > 0 and ys.max() < size - 1 and xs.max() < size - 1:
            last = c0 + multiple - 1
            return max(last - int(ys.min()), int(ys.max()) - c0, last - int(xs.min()), int(xs.max()) - c0)
        size *= 2


def probe(full: bool) -> list[dict[str, Any]]:
    """Probe seconds, new vs previous algorithm, same radius."""
    from diffsr.nets import receptive_field
    from diffsr.nets.baselines import build_baseline
    from diffsr.nets.exact_tiling import _Engine
    from diffsr.nets.unet import UNet

    def denoise(n: nn.Module, x: Tensor, c: Tensor) -> Tensor:
        return n(x, torch.zeros(x.shape[0]), c)

    cases: list[tuple[str, nn.Module, Callable[..., Tensor], list[tuple[int, int]], int, int, bool]] = []
    for size in ("tiny", "small", "base"):
        net = UNet(16, 16, 16, size=size).eval()  # the wavelet 'all' latent of a grey image
        cases.append((f"UNet {size} (batch 4)", net, denoise, [(4, 16), (4, 16)], net.multiple, 1,
                      size != "base" or full))
    for size in ("tiny", "base"):
        net = build_baseline("edsr", channels=1, scale=4, size=size).eval()
        cases.append((f"EDSR {size}", net, lambda n, x: n(x), [(1, 1)], 1, 4, size != "base" or full))
    rows = []
    for name, net, fn, shapes, multiple, scale, run_old in cases:
        receptive_field._RADII.pop(net, None)
        start = time.perf_counter()
        radius = receptive_field.receptive_radius(fn, shapes, multiple=multiple, scale=scale, net=net,
                                                  probe=lambda n: _Engine(n).probing())
        new = time.perf_counter() - start
        row = {"net": name, "radius": radius, "new_s": round(new, 3)}
        if run_old:
            start = time.perf_counter()
            row["old_radius"] = _old_radius(fn, shapes, multiple=multiple, scale=scale, net=net)
            row["old_s"] = round(time.perf_counter() - start, 3)
            row["speedup"] = round(row["old_s"] / new, 1)
        print(f"  probe {name}: {row}", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--lr", type=int, default=512, help="LR side (x4: 512 -> 2048 x 2048 output)")
    parser.add_argument("--tiles", default="768,1024,1536", help="exact tile sizes in HR pixels")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="also time the old probe on the base UNet / EDSR base")
    parser.add_argument("--only", choices=["tiling", "probe"], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = hardware()
    result: dict[str, Any] = {**meta, "lr": args.lr, "repeat": args.repeat}
    if args.only in (None, "tiling"):
        result["tiling"] = tiling(args.lr, [int(t) for t in args.tiles.split(",")], args.repeat)
    if args.only in (None, "probe"):
        result["probe"] = probe(args.full)
    result["loadavg_after"] = list(os.getloadavg())
    for row in result.get("tiling", []):
        print(f"{row['model']:<22} {row['variant']:<22} {row['seconds']:>8.2f} s  x{row['ratio_to_whole']:<6} "
              f"cache {row['cache_peak_mb']:>7.1f} MB  rss +{row['rss_peak_mb']:>7.1f} MB  diff {row['max_abs_diff']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
