"""Markdown tables for docs/results.md from the `diffsr eval` outputs of benchmarks/results_runs.sh.

    python benchmarks/results_tables.py [--runs runs/results]

Reads runs/results/eval-*/metrics.json (and the training logs for steps and wall time) and
prints one table per evaluation; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# eval folder -> (run folder of each --method, in the order given to `diffsr eval`)
EVALS: dict[str, list[str]] = {
    "eval-ir": ["bicubic", "ir-edsr", "ir-swinir", "ir-flowpx", "ir-dwt-ll", "ir-dwt-ll-l1", "ir-dwt-full",
                "ir-dwt-all", "ir-dwt-alll", "ir-demo"],
    "eval-abl": ["bicubic", "ir-demo", "abl-nofid", "abl-l1ssim", "abl-gnone", "abl-glinear", "abl-gbins",
                 "abl-minsnr"],
    "eval-irdeg": ["bicubic", "irdeg-edsr", "irdeg-demo"],
    "eval-mri": ["bicubic", "mri-edsr", "mri-swinir", "mri-flowpx", "mri-dwt-ll", "mri-dwt-full", "mri-dwt-all",
                 "mri-dwt-alll", "mri-demo"],
    "eval-mrik": ["bicubic", "mrik-edsr", "mrik-diffsr"],
    "eval-set5": ["bicubic", "ir-edsr", "ir-swinir", "ir-dwt-ll-l1", "ir-demo"],
    "eval-steps": ["bicubic", "ir-dwt-ll-l1"],
    "eval-steps-all": ["bicubic", "ir-dwt-all"],
    "eval-mrik-cons": ["bicubic", "mrik-diffsr@consistency=none", "mrik-diffsr"],
}


def _train_info(runs: Path, run: str) -> tuple[str, str]:
    run = run.split("@")[0]
    log = runs / f"{run}.log"
    if run == "bicubic" or not log.exists():
        return "—", "—"
    text = log.read_text()
    steps = re.search(r"trained (\d+) steps in (\d+) s", text)
    wall = re.search(rf"{re.escape(run)} wall ([\d.]+) s", text)
    return (steps.group(1) if steps else "?"), (f"{float(wall.group(1)):.0f}" if wall else "?")


def _ci(s: dict, d: int, sign: bool = False) -> str:
    lo, hi = s["ci95"]
    f = f"+.{d}f" if sign else f".{d}f"
    return f"{s['mean']:{f}} [{lo:{f}}, {hi:{f}}]"


def table(runs: Path, name: str) -> str:
    m = json.loads((runs / name / "metrics.json").read_text())
    labels = EVALS[name]
    methods = m["methods"]
    if len(methods) != len(labels):
        raise SystemExit(f"{name}: {len(methods)} methods in metrics.json, {len(labels)} expected")
    has_lpips = any("lpips" in m["summary"][k] for k in methods)
    head = ["run", "train steps / wall s", "params", "sampling steps", "PSNR dB [95 % CI]", "SSIM [95 % CI]",
            "sharpness", *(["LPIPS"] if has_lpips else []), "ΔPSNR vs bicubic [95 % CI] (better/worse)",
            "ΔSSIM vs bicubic", "s / image"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, run in zip(methods, labels, strict=True):
        s = m["summary"][key]
        steps, wall = _train_info(runs, run)
        info = (m.get("models") or {}).get(key) or {}
        params = "—" if not info.get("params") else f"{info['params'] / 1e6:.2f} M"
        samp = "—" if info.get("sampling_steps") is None else str(info["sampling_steps"])
        p = m["paired"].get(key)
        dpsnr = "—" if p is None else f"{_ci(p['psnr'] | {'mean': p['psnr']['mean_diff']}, 2, sign=True)} " \
                                      f"({p['psnr']['wins']}/{p['psnr']['losses']})"
        dssim = "—" if p is None else f"{p['ssim']['mean_diff']:+.4f}"
        row = [f"`{run}`" if run != "bicubic" else "bicubic", f"{steps} / {wall}", params, samp,
               _ci(s["psnr"], 2), _ci(s["ssim"], 4), f"{s['sharpness']['mean']:.3f}",
               *([f"{s['lpips']['mean']:.4f}" if "lpips" in s else "n/a"] if has_lpips else []),
               dpsnr, dssim, f"{m['timing'][key]['seconds_per_image_median']:.2f}"]
        out.append("| " + " | ".join(row) + " |")
    n = m["meta"]["images"]
    inputs = m.get("inputs") or {}
    out.append("")
    out.append(f"{n} test images; LR: {inputs.get('lr', '?')}; crop: {inputs.get('crop', '?')}.")
    return "\n".join(out)


def sweep_table(runs: Path, name: str = "eval-steps") -> str:
    m = json.loads((runs / name / "metrics.json").read_text())
    out = ["| run | sampling steps | PSNR dB [95 % CI] | SSIM [95 % CI] | sharpness [95 % CI] |",
           "|---|---|---|---|---|"]
    for key, by_steps in (m.get("steps_sweep") or {}).items():
        for steps in sorted(by_steps, key=int):
            s = by_steps[steps]
            out.append(f"| {key} | {steps} | {_ci(s['psnr'], 2)} | {_ci(s['ssim'], 4)} | {_ci(s['sharpness'], 3)} |")
    if "bicubic" not in m["summary"]:
        return "\n".join(out)
    b = m["summary"]["bicubic"]
    out.append(f"| bicubic | — | {_ci(b['psnr'], 2)} | {_ci(b['ssim'], 4)} | {_ci(b['sharpness'], 3)} |")
    return "\n".join(out)


# (eval folder, run A, run B[, eval folder of B]): paired PSNR / SSIM differences A - B on the same
# images (two evals of the same --data / --degradation / --seed / --crop see the same LR)
PAIRS = [
    ("eval-abl", "abl-gnone", "ir-edsr", "eval-ir"),
    ("eval-ir", "ir-demo", "ir-edsr"),
    ("eval-ir", "ir-dwt-ll-l1", "ir-dwt-ll"),
    ("eval-abl", "abl-gnone", "ir-demo"),
    ("eval-abl", "ir-demo", "abl-nofid"),
    ("eval-abl", "abl-l1ssim", "ir-demo"),
    ("eval-abl", "abl-minsnr", "ir-demo"),
    ("eval-irdeg", "irdeg-demo", "irdeg-edsr"),
    ("eval-mri", "mri-demo", "mri-edsr"),
    ("eval-mrik", "mrik-diffsr", "mrik-edsr"),
    ("eval-set5", "ir-demo", "ir-edsr"),
]


def pairs_table(runs: Path) -> str:
    from diffsr.eval.stats import paired_difference

    out = ["| images | A | B | ΔPSNR A − B dB [95 % CI] (A better/worse) | ΔSSIM A − B [95 % CI] |",
           "|---|---|---|---|---|"]
    for name, a, b, *other in PAIRS:
        name_b = other[0] if other else name
        if not (runs / name / "metrics.json").exists() or not (runs / name_b / "metrics.json").exists():
            continue
        m = json.loads((runs / name / "metrics.json").read_text())
        mb = json.loads((runs / name_b / "metrics.json").read_text())
        if m.get("inputs") != mb.get("inputs"):
            raise SystemExit(f"{name} and {name_b} were not made from the same test pairs")
        key = dict(zip(EVALS[name], m["methods"], strict=True))
        key_b = dict(zip(EVALS[name_b], mb["methods"], strict=True))
        cells = []
        for metric, d in (("psnr", 2), ("ssim", 4)):
            va = [m["per_image"][key[a]][img][metric] for img in m["per_image"][key[a]]]
            vb = [mb["per_image"][key_b[b]][img][metric] for img in m["per_image"][key[a]]]
            p = paired_difference(va, vb)
            lo, hi = p["ci95"]
            cells.append(f"{p['mean_diff']:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]"
                         + (f" ({p['wins']}/{p['losses']})" if metric == "psnr" else ""))
        out.append(f"| {name.removeprefix('eval-')} | `{a}` | `{b}` | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/results"))
    args = ap.parse_args()
    for name in EVALS:
        if (args.runs / name / "metrics.json").exists():
            print(f"### {name}\n")
            print(sweep_table(args.runs, name) if name.startswith("eval-steps") else table(args.runs, name))
            if name == "eval-mrik-cons":
                print()
                print(sweep_table(args.runs, name))
            print()
    print("### pairs\n")
    print(pairs_table(args.runs))


if __name__ == "__main__":
    main()
