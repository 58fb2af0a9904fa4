"""Calibrated intervals on real data: risk and width against the constant band and the raw std (docs/uncertainty.md).

    python benchmarks/uncertainty_tables.py --ir-run RUN --ir-cal DIR --ir-test DIR \
        --mri-run RUN --mri-volume T2w.nii.gz [--samples 8] [--alpha 0.1] [--delta 0.1]

Infrared: a model trained on RoadScene train frames, calibrated on held-out frames (whole 640x512
frames): with ``--ir-cal`` those frames, else every other one of the 20 RoadScene test frames
(sorted by name), the remaining 10 being the test. MRI: a model trained on the Kirby21 T1 slices;
the T2w volume's kept slices are split into two contiguous halves (no neighbouring slice on both
sides), the lower for calibration and the upper for the test, 24 evenly spaced slices each; only
the head counts (HR > 0.05).

For each: conformal risk control at alpha, and RCPS at (alpha, delta) where the set is large enough
(else the number of images it needs); on the test images the risk (fraction of pixels outside,
mean over images with a 95 % bootstrap CI) and the mean width of the calibrated intervals, the
constant band around the 1-step output (fitted the same way) and the raw sample std (lam = 1).
Results: benchmarks/results/uncertainty.json and docs/figures/coverage_vs_width_*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "uncertainty.json"
FIGURES = ROOT / "docs" / "figures"


def _images(loaded: Any, items: list[Any], samples: int, mask: float | None) -> list[Any]:
    from diffsr.sampling.calibration import image_intervals

    return [image_intervals(loaded, item, samples=samples, steps=None, kind="std", alpha=0.1, border=4,
                            mask_threshold=mask) for item in items]


def _split_volume(volume: Path, per_half: int) -> tuple[list[Any], list[Any]]:
    import numpy as np

    from diffsr.data.eval_items import load_eval_items

    items = load_eval_items(volume, 4)
    items.sort(key=lambda it: it.slice_index)
    half = len(items) // 2

    def pick(part: list[Any]) -> list[Any]:
        idx = np.unique(np.linspace(0, len(part) - 1, min(per_half, len(part))).round().astype(int))
        return [part[i] for i in idx]

    return pick(items[:half]), pick(items[half:])


def measure(name: str, loaded: Any, cal_items: list[Any], test_items: list[Any], *, samples: int, alpha: float,
            delta: float, mask: float | None) -> dict[str, Any]:
    from diffsr.sampling.calibration import (
        CalibrationError,
        fit_calibration,
        interval_report,
        min_images,
        plot_risk_vs_width,
        sampling_options,
    )

    t0 = time.perf_counter()
    cal = _images(loaded, cal_items, samples, mask)
    test = _images(loaded, test_items, samples, mask)
    sampling = sampling_options(loaded, samples, None)
    out: dict[str, Any] = {"calibration_images": len(cal), "test_images": len(test), "samples": samples,
                           "mask_threshold": mask}
    for method, d in (("crc", None), ("rcps", delta)):
        try:
            calibration = fit_calibration(cal, alpha=alpha, delta=d, kind="std", sampling=sampling, data={},
                                          mask_threshold=mask)
        except CalibrationError as err:
            out[method] = {"error": str(err), "needs": min_images(alpha, d)}
            continue
        report = interval_report(test, calibration)
        report.pop("curves") if method == "rcps" else None
        out[method] = report
        if method == "crc":
            FIGURES.mkdir(parents=True, exist_ok=True)
            plot_risk_vs_width(report, FIGURES / f"coverage_vs_width_{name}.png", title=f"{name}: CRC alpha {alpha:g}")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| data | guarantee | intervals | lam / half-width | test risk [95 % CI] | mean width |",
             "|---|---|---|---|---|---|"]
    for name, res in results.items():
        for method in ("crc", "rcps"):
            rep = res.get(method, {})
            if "error" in rep:
                lines.append(f"| {name} | {method.upper()} | – | – | not fitted: {rep['error']} | – |")
                continue
            guarantee = (f"CRC, alpha {rep['alpha']:g}" if method == "crc"
                         else f"RCPS, alpha {rep['alpha']:g}, delta {rep['delta']:g}")
            for kind, scale in (("calibrated", f"lam {rep['lam']:.3g}"),
                                ("constant_band", f"c {rep['constant_width']:.4f}"), ("raw_std", "lam 1")):
                r = rep[kind]["risk"]
                lines.append(f"| {name} | {guarantee} | {kind} | {scale} | {r['mean']:.4f} [{r['ci95'][0]:.4f}, "
                             f"{r['ci95'][1]:.4f}] | {rep[kind]['width']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ir-run", type=Path)
    p.add_argument("--ir-cal", type=Path, help="held-out calibration frames (default: every other --ir-test frame)")
    p.add_argument("--ir-test", type=Path)
    p.add_argument("--mri-run", type=Path)
    p.add_argument("--mri-volume", type=Path)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--per-half", type=int, default=24)
    args = p.parse_args()
    import torch

    from diffsr.data.eval_items import load_eval_items
    from diffsr.sampling.infer import load_model

    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    if args.ir_run:
        loaded = load_model(args.ir_run, device="cpu")
        if args.ir_cal:
            cal, test = load_eval_items(args.ir_cal, 4), load_eval_items(args.ir_test, 4)
        else:  # a model trained on every train frame: calibrate on half the test frames, test on the rest
            items = sorted(load_eval_items(args.ir_test, 4), key=lambda it: it.name)
            cal, test = items[0::2], items[1::2]
        results["infrared"] = measure("infrared", loaded, cal, test, samples=args.samples, alpha=args.alpha,
                                      delta=args.delta, mask=None)
    if args.mri_run:
        loaded = load_model(args.mri_run, device="cpu")
        cal, test = _split_volume(args.mri_volume, args.per_half)
        results["mri"] = measure("mri", loaded, cal, test, samples=args.samples, alpha=args.alpha,
                                 delta=args.delta, mask=0.05)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                              indent=2, default=float) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
