"""Tiled vs whole-image inference on a trained checkpoint: agreement and time, blend and exact tiling.

    python benchmarks/tiling_agreement.py RUN:TILE[:STEPS] [RUN:TILE[:STEPS] ...] [--image PNG] [--crop N]

RUN is a run folder (or a name under runs/results/), TILE the HR tile size, STEPS the sampling
steps (default: the run's). The LR input is the top-left ``--crop`` square (default 512) of
``--image`` (default: the first RoadScene test frame in ../shared/data), so x4 gives a 2048 x 2048
output. Prints max / mean |tiled - whole| and seconds for ``sample.tile_mode`` blend (overlap 64)
and exact; docs/data.md section 5 holds the figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from diffsr.data.io import read
from diffsr.sampling.infer import load_model, super_resolve

ROADSCENE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "infrared" / "roadscene" / "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN:TILE[:STEPS]")
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--crop", type=int, default=512)
    args = parser.parse_args()
    image = args.image or sorted(ROADSCENE.glob("*.png"))[0]
    array = torch.from_numpy(read(image).array[:1].astype("float32"))
    lr = (array / 255.0 if array.max() > 1 else array)[..., : args.crop, : args.crop]
    for spec in args.runs:
        run, tile, steps = ([*spec.split(":"), "0"])[:3]
        path = Path(run) if Path(run).exists() else Path("runs/results") / run
        loaded = load_model(path, device="cpu")
        n = int(steps) or None
        rows = {}
        for mode, t in (("whole", 0), ("blend", int(tile)), ("exact", int(tile))):
            loaded.config.sample.tile_mode = "exact" if mode == "whole" else mode  # type: ignore[assignment]
            start = time.perf_counter()
            rows[mode] = (super_resolve(loaded, lr, tile=t, overlap=64, steps=n), time.perf_counter() - start)
        whole = rows["whole"][0]
        parts = [f"{run} steps {n or 'default'}: {tuple(lr.shape[-2:])} -> {tuple(whole.shape[-2:])}, tile {tile}: "
                 f"whole {rows['whole'][1]:.1f} s"]
        for mode in ("blend", "exact"):
            diff = (rows[mode][0] - whole).abs()
            parts.append(f"{mode} max {diff.max():.1e} mean {diff.mean():.1e} {rows[mode][1]:.1f} s")
        print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
