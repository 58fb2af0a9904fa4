"""PSNR of the faithful estimate, of one posterior sample and of the mean of N samples (docs/results.md).

    python benchmarks/posterior_mean.py --run RUN --data DIR_OR_VOLUME [--limit 24] [--n 1,4,16] [--name ir]

Theory: the posterior mean minimises the expected squared error, and one posterior sample costs up
to 3 dB against it (its error is the truth's spread plus the sample's). So the mean of N full-chain
samples (detail 1) should climb from the one-sample PSNR towards the posterior mean's as N grows,
and approach or beat the one-step estimate (detail 0) if that estimate is a good conditional
mean. Per image, seeds sample.seed + k; PSNR / SSIM / sharpness with the eval conventions (border
= scale, float). Results: benchmarks/results/posterior_mean_<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--n", default="1,4,16")
    p.add_argument("--name", default="run")
    args = p.parse_args()
    import numpy as np
    import torch

    from diffsr.data.eval_items import load_eval_items
    from diffsr.eval.metrics import Conventions, MetricSuite
    from diffsr.sampling.infer import load_model, super_resolve

    torch.set_num_threads(2)
    counts = [int(n) for n in args.n.split(",")]
    loaded = load_model(args.run, device="cpu")
    items = load_eval_items(args.data, loaded.scale, max_slices=args.limit)
    if args.limit:
        items = items[: args.limit]
    suite = MetricSuite(Conventions(crop_border=loaded.scale, sharpness_cutoff=0.5 / loaded.scale), lpips=False)
    rows: dict[str, list[dict[str, float]]] = {"detail 0 (one-step)": [], "detail 1, one sample": []}
    rows.update({f"mean of {n} samples (detail 1)": [] for n in counts})
    seed = loaded.config.sample.seed
    for item in items:
        loaded.config.sample.detail = 0.0
        faithful = super_resolve(loaded, item.lr).cpu()
        loaded.config.sample.detail = 1.0
        draws = [super_resolve(loaded, item.lr, seed=seed + k).cpu() for k in range(max(counts))]
        outputs = {"detail 0 (one-step)": faithful, "detail 1, one sample": draws[0]}
        outputs.update({f"mean of {n} samples (detail 1)": torch.stack(draws[:n]).mean(0) for n in counts})
        for key, sr in outputs.items():
            values = suite(sr, item.hr)
            rows[key].append({k: float(v[0]) for k, v in values.items()})
    summary = {key: {m: float(np.mean([r[m] for r in vals])) for m in ("psnr", "ssim", "sharpness")}
               for key, vals in rows.items()}
    out = ROOT / "benchmarks" / "results" / f"posterior_mean_{args.name}.json"
    out.write_text(json.dumps({"run": str(args.run), "data": str(args.data), "images": len(items),
                               "summary": summary}, indent=2) + "\n")
    print(f"| {args.name} | PSNR | SSIM | sharpness |\n|---|---|---|---|")
    for key, s in summary.items():
        print(f"| {key} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['sharpness']:.3f} |")


if __name__ == "__main__":
    main()
