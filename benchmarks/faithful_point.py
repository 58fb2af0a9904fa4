"""The faithful point: diffsr's one-step output against EDSR at the same training budget (issue 17).

    python benchmarks/faithful_point.py rates            # steps/s of every recipe (quiet machine!)
    python benchmarks/faithful_point.py train [NAMES..]  # step budgets = rate x seconds, 1 thread each
    python benchmarks/faithful_point.py eval  [NAMES..]  # diffsr eval on RoadScene test / Kirby21 T2w
    python benchmarks/faithful_point.py tables           # the markdown tables of docs/results.md
    python benchmarks/faithful_point.py conditioning     # what the 1-step output takes from z_T
    python benchmarks/faithful_point.py figure           # docs/figures/faithful_point_pd.png

A budget is wall-clock seconds of training on this machine with its two threads. Each recipe's
throughput is measured once on a quiet machine (``rates``: a 60 s run, steps over the loop's
time); a run of budget B then trains ``round(rate x B)`` steps. Training by step count keeps the
comparison fair when other jobs share the CPU, and lets two runs train side by side on one
thread each without changing what they learn. Every run has the same data (RoadScene train /
Kirby21 T1 slices, 64x64 patches, batch 16), degradation (bicubic x4) and seed; the learning
rate schedule spans the run's own steps.

Evaluation: all 20 RoadScene test frames, whole (640x512), and 24 evenly spaced Kirby21 T2w
slices (trained on T1: a cross-contrast test); PSNR / SSIM / sharpness with the eval defaults
(crop border 4, Y channel). Runs and outputs: runs/faithful/ (ignored); the summary:
benchmarks/results/faithful_point.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "faithful"
SUMMARY = ROOT / "benchmarks" / "results" / "faithful_point.json"
DATA = ROOT.parent / "shared" / "data"
SETS = {
    "ir": {"train": DATA / "infrared/roadscene/train", "test": DATA / "infrared/roadscene/test", "limit": None},
    "mri": {"train": DATA / "medical/kirby21/113-02-MPRAGE_processed_reg.nii.gz",
            "test": DATA / "medical/kirby21/113-02-T2w_processed_reg.nii.gz", "limit": 24},
}
COMMON = ["data.patch_size=64", "data.batch_size=16", "train.time_limit=null", "train.log_every=50",
          "train.seed=0"]

# the demo recipe as the issue found it: L1 gated to t <= 1 while the 1-step sampler works at t = 3
OLD_DEMO = ["losses.terms.0.gate.kind=hard", "losses.terms.0.gate.t_max=1", "train.faithful_fraction=0",
            "net.name=unet", "net.size=tiny", "train.ema_decay=0.995", "train.lr=0.0005", "train.warmup_steps=50"]
SAMPLER = ["losses.terms.0.gate.kind=sampler"]

#: name -> (preset, overrides): the ablation of issue 17, each lever on top of the previous
RECIPES: dict[str, tuple[str, list[str]]] = {
    "edsr": ("edsr", []),
    "demo-old": ("demo", OLD_DEMO),
    "gate-none": ("demo", [*OLD_DEMO, "losses.terms.0.gate.kind=none"]),
    "gate-sampler": ("demo", [*OLD_DEMO, *SAMPLER]),
    "faithful-0.5": ("demo", [*OLD_DEMO, *SAMPLER, "train.faithful_fraction=0.5"]),
    "resnet": ("demo", [*OLD_DEMO, *SAMPLER, "train.faithful_fraction=0.5", "net.name=resnet"]),
    "unet-small": ("demo", [*OLD_DEMO, *SAMPLER, "train.faithful_fraction=0.5", "net.size=small"]),
    "demo": ("demo", []),  # the preset as shipped now
}
EXTRA: dict[str, tuple[str, list[str]]] = {}  # hygiene variants of the winner, added by name below
for _ema in ("0.999", "null"):
    EXTRA[f"demo-ema-{_ema}"] = ("demo", [f"train.ema_decay={_ema}"])
for _lr in ("0.001", "0.0002"):
    EXTRA[f"demo-lr-{_lr}"] = ("demo", [f"train.lr={_lr}"])
EXTRA["demo-warmup-200"] = ("demo", ["train.warmup_steps=200"])
#: EDSR gets the same hygiene sweep, so each variant is compared with EDSR's best at the budget
EDSR_EXTRA: dict[str, tuple[str, list[str]]] = {
    "edsr-ema-null": ("edsr", ["train.ema_decay=null"]),
    "edsr-lr-0.0005": ("edsr", ["train.lr=0.0005"]),
    "edsr-lr-0.001": ("edsr", ["train.lr=0.001"]),
}
#: the same recipes with another training seed: how far two runs of one recipe land apart
SEEDS: dict[str, tuple[str, list[str]]] = {
    "faithful-0.5-seed1": (RECIPES["faithful-0.5"][0], [*RECIPES["faithful-0.5"][1], "train.seed=1"]),
    "resnet-seed1": (RECIPES["resnet"][0], [*RECIPES["resnet"][1], "train.seed=1"]),
    "edsr-seed1": ("edsr", ["train.seed=1"]),
}
RECIPES.update(EXTRA)
RECIPES.update(EDSR_EXTRA)
RECIPES.update(SEEDS)
#: recipes that differ only in numbers that cost nothing (EMA decay, learning rate, warm-up, the gate)
#: share the measured rate of the one named here
RATE_OF = {**{name: "faithful-0.5" for name in EXTRA}, **{name: "edsr" for name in EDSR_EXTRA},
           **{name: name.removesuffix("-seed1") for name in SEEDS},
           "gate-none": "demo-old", "demo": "faithful-0.5"}


def _summary() -> dict[str, Any]:
    return json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {"rates": {}, "runs": {}}


def _update(section: str, key: str, value: Any) -> None:
    """Set summary[section][key] = value, re-reading the file under a lock (queues run side by side)."""
    import fcntl

    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    with open(SUMMARY.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _summary()
        data.setdefault(section, {})[key] = value
        tmp = SUMMARY.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, SUMMARY)


def _train(name: str, dataset: str, steps: int, threads: int, tag: str) -> Path:
    preset, overrides = RECIPES[name]
    out = RUNS / f"{dataset}-{name}-{tag}"
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").glob(f"step_{steps:07d}")):
        return out
    args = [sys.executable, "-m", "diffsr", "train", preset, "--out", str(out), "--no-progress"]
    sets = [*COMMON, *overrides, f"data.train={SETS[dataset]['train']}", f"train.steps={steps}",
            f"train.ckpt_every={steps}", f"train.threads={threads}"]
    for s in sets:
        args += ["--set", s]
    if out.exists():
        import shutil

        shutil.rmtree(out)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(args, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return out


def rates(names: list[str]) -> None:
    """Steps per second of each recipe on IR and MRI with 2 threads (a 60 s run each)."""
    for dataset in SETS:
        for name in names:
            preset, overrides = RECIPES[name]
            out = RUNS / f"rate-{dataset}-{name}"
            args = [sys.executable, "-m", "diffsr", "train", preset, "--out", str(out), "--no-progress"]
            sets = [*COMMON, *overrides, f"data.train={SETS[dataset]['train']}", "train.steps=100000",
                    "train.time_limit=60", "train.ckpt_every=100000", "train.threads=2", "train.audit=false"]
            for s in sets:
                args += ["--set", s]
            if out.exists():
                import shutil

                shutil.rmtree(out)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            subprocess.run(args, check=True, cwd=ROOT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
                           stdout=subprocess.DEVNULL)
            meta = json.loads(sorted((out / "checkpoints").glob("step_*"))[-1].joinpath("meta.json").read_text())
            steps = meta["step"]
            rate = steps / 60.0
            _update("rates", f"{dataset}/{name}", {"steps_per_s": rate, "steps_in_60s": steps,
                                                   "load_before": load, "wall": time.perf_counter() - t0})
            print(f"{dataset}/{name}: {rate:.3f} steps/s (load {load:.2f})", flush=True)


def train(names: list[str], budgets: list[int], datasets: list[str], threads: int = 1) -> None:
    """Train every (dataset, recipe, budget) by its step budget."""
    data = _summary()
    for dataset in datasets:
        for name in names:
            rate = data["rates"][f"{dataset}/{RATE_OF.get(name, name)}"]["steps_per_s"]
            for budget in budgets:
                steps = max(1, round(rate * budget))
                t0 = time.perf_counter()
                out = _train(name, dataset, steps, threads, f"{budget}s")
                _update("runs", f"{dataset}/{name}/{budget}s", {"steps": steps, "run": str(out.relative_to(ROOT)),
                                                                "wall": round(time.perf_counter() - t0, 1),
                                                                "threads": threads})
                print(f"trained {dataset}/{name}/{budget}s: {steps} steps", flush=True)


def evaluate(names: list[str], budgets: list[int], datasets: list[str], extra: list[str] | None = None) -> None:
    """diffsr eval of bicubic and every run of ``names`` at ``budgets`` on the test set."""
    data = _summary()
    for dataset in datasets:
        specs = []
        for name in names:
            for budget in budgets:
                key = f"{dataset}/{name}/{budget}s"
                if key in data["runs"]:
                    specs.append(str(ROOT / data["runs"][key]["run"]))
        specs += [s for s in (extra or [])]
        out = RUNS / f"eval-{dataset}-{'-'.join(names)}-{'-'.join(map(str, budgets))}"
        args = [sys.executable, "-m", "diffsr", "eval", "--data", str(SETS[dataset]["test"]), "--scale", "4",
                "--out", str(out), "--method", "bicubic", "--detail-sweep", "none"]
        if SETS[dataset]["limit"]:
            args += ["--limit", str(SETS[dataset]["limit"])]
        for spec in specs:
            args += ["--method", spec]
        subprocess.run(args, check=True, cwd=ROOT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        metrics = json.loads((out / "metrics.json").read_text())
        for method, spec in zip(metrics["methods"][1:], specs, strict=True):
            key = next((k for k, v in data["runs"].items() if str(ROOT / v["run"]) == spec.split("@")[0]), spec)
            summary = metrics["summary"][method]
            _update("scores", key + ("@" + spec.split("@")[1] if "@" in spec else ""),
                    {m: summary[m]["mean"] for m in ("psnr", "ssim", "sharpness", "hfen") if m in summary})
        _update("scores", f"{dataset}/bicubic",
                {m: metrics["summary"]["bicubic"][m]["mean"] for m in ("psnr", "ssim", "sharpness", "hfen")})


def tables() -> None:
    """Markdown tables: the ablation at 300 s and the time-to-quality curves."""
    data = _summary()
    scores = data.get("scores", {})
    for dataset in SETS:
        edsr = scores.get(f"{dataset}/edsr/300s")
        edsr_runs = [n for n in RECIPES if RECIPES[n][0] == "edsr" and f"{dataset}/{n}/300s" in scores]
        best_name = max(edsr_runs, key=lambda n: scores[f"{dataset}/{n}/300s"]["psnr"], default=None)
        best = scores[f"{dataset}/{best_name}/300s"] if best_name else None
        print(f"\n### {dataset}: ablation at 300 s (same budget; differences vs EDSR as shipped and vs the best "
              f"EDSR variant, {best_name})\n")
        print("| recipe | steps | PSNR | SSIM | sharpness | dPSNR / dSSIM vs EDSR | dPSNR / dSSIM vs best EDSR |")
        print("|---|---|---|---|---|---|---|")
        for name in RECIPES:
            s = scores.get(f"{dataset}/{name}/300s")
            if s is None:
                continue
            steps = data["runs"][f"{dataset}/{name}/300s"]["steps"]
            cells = [f"{s['psnr'] - ref['psnr']:+.2f} / {s['ssim'] - ref['ssim']:+.4f}" if ref else "-"
                     for ref in (edsr, best)]
            print(f"| {name} | {steps} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['sharpness']:.3f} | {cells[0]} | "
                  f"{cells[1]} |")
        print(f"\n### {dataset}: PSNR (SSIM, sharpness) against training seconds\n")
        budgets = sorted({int(k.split("/")[2][:-1]) for k in scores if k.startswith(dataset + "/") and
                          k.count("/") == 2 and k.endswith("s") and "@" not in k})
        print("| recipe | " + " | ".join(f"{b} s" for b in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        for name in ("demo", "edsr"):
            cells = []
            for b in budgets:
                s = scores.get(f"{dataset}/{name}/{b}s")
                if s is None and name == "demo":  # the demo preset's recipe is the ablation's faithful-0.5
                    s = scores.get(f"{dataset}/faithful-0.5/{b}s")
                cells.append(f"{s['psnr']:.2f} ({s['ssim']:.4f}, {s['sharpness']:.2f})" if s else "-")
            print(f"| {name} | " + " | ".join(cells) + " |")


def conditioning(budget: int = 300) -> None:
    """What the faithful (1-step) output of the trained demo recipe takes from its start z_T.

    ResShift starts at z_T = y + sigma_T eps (y: the LR-up latent, also fed as the condition).
    Scored on the test set with the eval defaults: the shipped start (two seeds, to see how much
    the output moves with eps), the noise-free start z_T = y (the LR-up estimate itself), and a
    start that carries no LR information, z_T = sigma_T eps, so the image reaches the net only
    through its condition channels.
    """
    import math

    from diffsr.config import EvalConfig
    from diffsr.data.datasets import load_eval_items
    from diffsr.data.degrade import BicubicDegradation
    from diffsr.eval.evaluate import evaluate
    from diffsr.eval.metrics import Conventions
    from diffsr.sampling.infer import load_model

    data = _summary()
    for dataset, spec in SETS.items():
        run = ROOT / data["runs"][f"{dataset}/faithful-0.5/{budget}s"]["run"]
        model = load_model(run).model
        process = model.process
        sigma = process.kappa * math.sqrt(float(process.etas[-1]))


        methods = {"z_T = y + s eps (seed a)": _start(model, sigma, "prior"),
                   "z_T = y + s eps (seed b)": _start(model, sigma, "prior", 1000),
                   "z_T = y (LR-up, no noise)": _start(model, sigma, "lr-up"),
                   "z_T = s eps (no LR in z_T)": _start(model, sigma, "no-lr")}
        items = load_eval_items(spec["test"], 4, 1, degradation=BicubicDegradation(4), max_slices=spec["limit"])
        items = items[: spec["limit"]] if spec["limit"] else items
        out = RUNS / f"conditioning-{dataset}-{budget}s"
        result = evaluate(items, methods, Conventions.from_config(EvalConfig(), 4), out, lpips=False, figures=False)
        seeds = [result["per_image"][m] for m in list(methods)[:2]]
        gap = sum(abs(seeds[0][k]["psnr"] - seeds[1][k]["psnr"]) for k in seeds[0]) / len(seeds[0])
        rows = {m: {k: result["summary"][m][k]["mean"] for k in ("psnr", "ssim", "sharpness")} for m in methods}
        _update("conditioning", f"{dataset}/{budget}s", {"starts": rows, "seed_abs_psnr_gap_mean": gap})
        for m, r in rows.items():
            print(f"{dataset} | {m} | {r['psnr']:.3f} | {r['ssim']:.4f} | {r['sharpness']:.3f}")
        print(f"{dataset}: mean |PSNR(seed a) - PSNR(seed b)| per image = {gap:.4f} dB", flush=True)


def _start(model: Any, sigma: float, kind: str, seed_offset: int = 0) -> Any:
    """A 1-step eval method whose ResShift start is ``kind``: prior | lr-up | no-lr (see conditioning)."""
    import torch

    from diffsr.codecs.base import pad_to
    from diffsr.sampling.infer import upsample_lr

    def method(lr: torch.Tensor, scale: int) -> torch.Tensor:
        up = upsample_lr(lr, scale)
        if seed_offset:  # the eval seeds each image; another seed for the same image
            torch.manual_seed(torch.initial_seed() + seed_offset)
        if kind == "prior":
            return model.sample(up, steps=1)
        zc = model.codec.encode(pad_to(up, model.codec.downsample)[0]).z
        eps = torch.randn_like(zc)
        noise = torch.zeros_like(zc) if kind == "lr-up" else eps - zc / sigma  # prior = zc + sigma * noise
        return model.sample(up, steps=1, noise=noise)

    return method


def figure(path: Path = ROOT / "docs" / "figures" / "faithful_point_pd.png") -> None:
    """Every 300 s run (and the curves' other budgets) on the perception-distortion plane:
    PSNR against sharpness, one panel per dataset, EDSR recipes in one colour, diffsr in another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = _summary().get("scores", {})
    fig, axes = plt.subplots(1, len(SETS), figsize=(6.5 * len(SETS), 5))
    for ax, dataset in zip(axes, SETS, strict=True):
        for key, s in sorted(scores.items()):
            parts = key.split("/")
            if parts[0] != dataset or "@" in key:
                continue
            name = parts[1]
            budget = parts[2] if len(parts) == 3 else ""
            if name == "bicubic":
                colour, marker = "grey", "s"
            elif RECIPES.get(name, ("",))[0] == "edsr":
                colour, marker = "tab:orange", "o"
            else:
                colour, marker = "tab:blue", "o" if budget == "300s" else "^"
            ax.scatter(s["sharpness"], s["psnr"], c=colour, marker=marker, s=28)
            label = name if budget in ("300s", "") else f"{name} {budget}"
            ax.annotate(label, (s["sharpness"], s["psnr"]), fontsize=7, xytext=(3, 2), textcoords="offset points")
        ax.set_title({"ir": "infrared x4 (RoadScene, 20 frames)", "mri": "MRI x4 (Kirby21 T2w, 24 slices)"}[dataset])
        ax.set_xlabel("sharpness (higher: more detail)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    fig.suptitle("The faithful point: diffsr (blue) and EDSR (orange) runs, 300 s unless marked")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    verb, *rest = sys.argv[1:] or ["tables"]
    budgets = [int(b) for b in os.environ.get("BUDGETS", "300").split(",")]
    datasets = os.environ.get("DATASETS", "ir,mri").split(",")
    if verb == "rates":
        rates(rest or [n for n in RECIPES if n not in RATE_OF])
    elif verb == "train":
        train(rest or list(RECIPES), budgets, datasets, int(os.environ.get("THREADS", "1")))
    elif verb == "eval":
        evaluate(rest or list(RECIPES), budgets, datasets, os.environ.get("EXTRA", "").split(",") if
                 os.environ.get("EXTRA") else None)
    elif verb == "tables":
        tables()
    elif verb == "figure":
        figure()
    elif verb == "conditioning":
        conditioning(budgets[0])
    else:
        raise SystemExit(f"unknown verb {verb!r}: rates | train | eval | tables | conditioning | figure")


if __name__ == "__main__":
    main()
