"""The GPU check's measurements and CUDA checks, in one process (driven by benchmarks/gpu_check.sh).

    python benchmarks/gpu_check.py checks|speed [--device cuda|cpu] [--dry-run] --out DIR [--data DIR]
    python benchmarks/gpu_check.py summary --out DIR

- ``checks``: CUDA variants of the key tests - bf16 training steps stay finite (the real
  Trainer, ``train.mixed_precision=bf16``); resume is exact (4 steps == 2 + resume + 2; fp32,
  TF32 off, deterministic kernels, max abs parameter difference against a stated tolerance);
  exact tiling equals the whole image (``super_resolve`` tile vs none, 1e-4, TF32 off); one
  ``codec.decode`` per step for the whole loss stack. Writes ``checks.json``.
- ``speed``: training throughput (img/s, bf16 autocast, batch 4 at 256x256) of ``demo``,
  ``difiisr-dwt-all`` (small UNet) and ``edsr`` with and without the loss stack (l1 + ssim +
  ffl + edge); the Haar level-2 round trip against ptwt and a device-to-device copy of the same
  tensor (target <= 3x the copy); SSIM forward+backward against pytorch_msssim (target: no
  slower); ``super_resolve`` latency at 512^2 x4 for 1/4/15 steps (target <= 0.1 s at 4 steps)
  and peak memory. Writes ``speed.json``.
- ``runs``: the time-budgeted trainings gpu_check.sh ran (steps reached) and the mean metrics
  of their ``diffsr eval``. Writes ``runs.json``.
- ``summary``: merges every JSON under ``--out`` into ``summary.json`` and ``summary.md``.

``--dry-run`` shrinks every size and repeat so the whole script runs on a CPU in well under two
minutes (CI runs it: tests/integration/test_gpu_check.py); its figures mean nothing. Each
measurement is wrapped: an error is recorded (``"status": "error"``) and the others still run,
since GPU time comes in short slots. Missing optional peers (ptwt, pytorch_msssim) are recorded
as skipped: install them from a wheels folder (``gpu_check.sh --wheels``); nothing here uses the
network.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (the resume check), before CUDA

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _models import random_demo_model  # noqa: E402
from loss_stack import TERMS, count_decodes, hardware, make_batch, make_step  # noqa: E402
from PIL import Image  # noqa: E402

from diffsr.config import LossesConfig, load_config  # noqa: E402
from diffsr.losses import build_loss_stack  # noqa: E402
from diffsr.model import build_model  # noqa: E402

#: sizes for the real run and for --dry-run (CPU, tiny): training patch, wavelet shape, SSIM
#: shape, inference LR side, repeats
REAL = {"patch": 256, "batch": 4, "wavelet": (16, 3, 256, 256), "ssim": [(8, 1, 256, 256), (8, 3, 256, 256)],
        "lr": 128, "repeat": 10, "train_repeat": 5, "steps": (1, 4, 15), "check_steps": 4, "check_patch": 64}
DRY = {"patch": 32, "batch": 2, "wavelet": (2, 1, 32, 32), "ssim": [(2, 1, 32, 32)],
       "lr": 16, "repeat": 1, "train_repeat": 1, "steps": (1, 4), "check_steps": 4, "check_patch": 32}
TINY_NET = ["net.width=8", "net.channel_mult=[1,2]", "net.attention_levels=[]"]
THROUGHPUT = {  # name -> (preset, overrides): the three models
    "demo": ("demo", []),
    "difiisr-dwt-all (small UNet)": ("difiisr-dwt-all", ["net.size=small"]),
    "edsr": ("edsr", []),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _guard(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement; record an error instead of raising (the other measurements still run)."""
    start = time.perf_counter()
    try:
        row = {"name": name, "status": "ok", **fn()}
    except Exception as err:  # noqa: BLE001 - one failure must not lose the slot's other figures
        traceback.print_exc()
        row = {"name": name, "status": "error", "error": f"{type(err).__name__}: {err}"}
    row["seconds"] = round(time.perf_counter() - start, 2)
    print(f"[gpu_check] {name}: {row['status']} ({row['seconds']} s)", flush=True)
    return row


@contextlib.contextmanager
def _strict_fp32() -> Iterator[None]:
    """TF32 off (matmul and cuDNN): comparisons at 1e-4 need true float32 convolutions."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _tiny_pngs(folder: Path, n: int = 4, size: int = 64) -> Path:
    """Smooth random 8-bit PNGs: training data when no --data is given."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(0)
    for i in range(n):
        coarse = gen.random((size // 8, size // 8))
        img = np.kron(coarse, np.ones((8, 8))) * 255
        Image.fromarray(img.astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


# ----------------------------------------------------------------------------- checks


def _train_cfg(data: Path, steps: int, patch: int, extra: list[str]) -> Any:
    return load_config("demo", [
        *TINY_NET, f"data.patch_size={patch}", "data.batch_size=2", "train.log_every=1", "train.time_limit=null",
        "train.warmup_steps=0", "sample.steps=1", "train.audit=false", f"train.steps={steps}",
        "train.ckpt_every=1000", f"data.train={data}", f"data.val={data}", *extra])


def check_bf16_finite(data: Path, work: Path, device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    from diffsr.train.checkpoint import read_checkpoint
    from diffsr.train.trainer import Trainer

    precision = "bf16" if device.type == "cuda" else "'no'"  # quoted: YAML reads a bare no as false
    cfg = _train_cfg(data, sizes["check_steps"], sizes["check_patch"],
                     [f"train.mixed_precision={precision}", "losses.terms=[{name: l1}, {name: ssim}]"])
    result = Trainer(cfg, work / "bf16", progress=False, cpu=device.type == "cpu").fit()
    params = read_checkpoint(work / "bf16")["model"]
    finite = all(torch.isfinite(v).all() for v in params.values() if v.is_floating_point())
    report = {k: v for k, v in result.last_report.items() if isinstance(v, int | float)}
    ok = finite and result.skipped_steps == 0 and result.nonfinite_terms == 0 and all(
        math.isfinite(v) for v in report.values())
    return {"precision": precision.strip("'"), "steps": result.step, "skipped_steps": result.skipped_steps,
            "nonfinite_terms": result.nonfinite_terms, "params_finite": finite, "last_report": report, "pass": ok}


def check_resume(data: Path, work: Path, device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    from diffsr.train.checkpoint import read_checkpoint
    from diffsr.train.trainer import Trainer

    tol = 0.0 if device.type == "cpu" else 1e-6
    cfg = _train_cfg(data, sizes["check_steps"], sizes["check_patch"], ["train.mixed_precision='no'"])
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with _strict_fp32():
            cpu = device.type == "cpu"
            Trainer(cfg, work / "a", progress=False, cpu=cpu).fit()
            half = sizes["check_steps"] // 2
            Trainer(cfg, work / "b", progress=False, cpu=cpu).fit(stop_after=half)
            Trainer(cfg, work / "b", resume=True, progress=False, cpu=cpu).fit()
    finally:
        torch.use_deterministic_algorithms(det)
    a, b = read_checkpoint(work / "a"), read_checkpoint(work / "b")
    diff = max(float((v.double() - b["model"][k].double()).abs().max()) for k, v in a["model"].items()
               if v.is_floating_point())
    return {"steps": int(a["state"]["step"]), "resumed_steps": int(b["state"]["step"]), "max_abs_param_diff": diff,
            "tolerance": tol, "pass": diff <= tol and a["state"]["step"] == b["state"]["step"]}


def check_exact_tiling(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    from diffsr.sampling.infer import super_resolve

    # tests/nets/test_exact_tiling.py's set-up: latent 72 x 78, halo 24, latent tile 64 -> 5 x 5 tiles
    loaded = random_demo_model(["net.width=16", "net.channel_mult=[1,2]", "sample.tile_mode=exact"], device)
    lr = torch.rand(1, 1, 72, 78, generator=torch.Generator().manual_seed(1)).to(device)
    with _strict_fp32():
        whole = super_resolve(loaded, lr, tile=0, seed=3, steps=2)
        exact = super_resolve(loaded, lr, tile=256, seed=3, steps=2)
    diff = float((exact - whole).abs().max())
    return {"lr": [72, 78], "tile": 256, "max_abs_diff": diff, "tolerance": 1e-4, "pass": diff < 1e-4}


def check_one_decode(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    cfg = load_config("demo", [f"data.patch_size={sizes['check_patch']}"])
    model = build_model(cfg).to(device)
    batch = make_batch(2, sizes["check_patch"], cfg.data.scale, device)
    stack = build_loss_stack(LossesConfig(terms=TERMS), channels=1).to(device)
    calls = count_decodes(model, [stack], batch)
    return {"terms": [t["name"] for t in TERMS], "decode_calls": calls, "pass": calls == 1}


def run_checks(device: torch.device, sizes: dict[str, Any], data: Path | None, out: Path) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = data if data is not None else _tiny_pngs(work / "pngs")
        return [
            _guard("bf16 training steps are finite", lambda: check_bf16_finite(train, work, device, sizes)),
            _guard("resume is exact", lambda: check_resume(train, work, device, sizes)),
            _guard("exact tiling equals the whole image", lambda: check_exact_tiling(device, sizes)),
            _guard("one decode per step for the loss stack", lambda: check_one_decode(device, sizes)),
        ]


# ----------------------------------------------------------------------------- speed


def throughput(device: torch.device, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    bf16 = device.type == "cuda"
    for name, (preset, overrides) in THROUGHPUT.items():
        def one(preset: str = preset, overrides: list[str] = overrides) -> dict[str, Any]:
            size, batch_size = sizes["patch"], sizes["batch"]
            cfg = load_config(preset, [f"data.batch_size={batch_size}", f"data.patch_size={size}", *overrides])
            batch = make_batch(batch_size, size, cfg.data.scale, device)
            steps = {}
            for key, terms in (("diffusion", []), ("stack", TERMS)):
                torch.manual_seed(0)
                model = build_model(cfg).to(device)
                steps[key] = make_step(model, [build_loss_stack(LossesConfig(terms=terms), channels=1).to(device)],
                                       batch)
            out: dict[str, Any] = {"preset": preset, "overrides": overrides, "batch": batch_size, "patch": size,
                                   "autocast": "bf16" if bf16 else "none"}
            times: dict[str, list[float]] = {k: [] for k in steps}
            for i in range(2 + sizes["train_repeat"]):  # interleaved, after 2 warm-up steps
                for key, step in steps.items():
                    _sync(device)
                    start = time.perf_counter()
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        loss = step(i)
                    _sync(device)
                    if i >= 2:
                        times[key].append(time.perf_counter() - start)
                    out[f"{key}_loss_finite"] = math.isfinite(loss)
            for key, ts in times.items():
                out[f"{key}_img_per_s"] = round(batch_size / statistics.median(ts), 2)
            out["stack_over_diffusion"] = round(statistics.median(times["stack"]) / statistics.median(
                times["diffusion"]), 3)
            return out

        rows.append(_guard(f"training throughput: {name}", one))
    return rows


def wavelet(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    from diffsr.codecs.wavelet import wavedec2, waverec2

    x = torch.rand(sizes["wavelet"], device=device)
    ours = waverec2(wavedec2(x, "haar", 2), "haar")
    fns: dict[str, Callable[[], Any]] = {"diffsr": lambda: waverec2(wavedec2(x, "haar", 2), "haar"),
                                         "copy": lambda: x.clone()}
    row: dict[str, Any] = {"shape": list(x.shape), "levels": 2, "max_abs_roundtrip_err": float((ours - x).abs().max())}
    try:
        import ptwt

        fns["ptwt"] = lambda: ptwt.waverec2(ptwt.wavedec2(x, "haar", level=2, mode="zero"), "haar")
        ref = ptwt.wavedec2(x, "haar", level=2, mode="zero")
        row["max_abs_diff_vs_ptwt_ll"] = float((wavedec2(x, "haar", 2)[0] - ref[0]).abs().max())
    except ImportError:
        row["ptwt"] = "skipped: not installed (gpu_check.sh --wheels)"
    for name, fn in fns.items():
        row[f"{name}_ms"] = round(1e3 * statistics.median(_timed(fn, device, sizes["repeat"] * 2)), 3)
    row["over_copy"] = round(row["diffsr_ms"] / row["copy_ms"], 2)
    row["target_over_copy"] = 3.0
    if "ptwt_ms" in row:
        row["speedup_vs_ptwt"] = round(row["ptwt_ms"] / row["diffsr_ms"], 2)
    return row


def ssim_speed(device: torch.device, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    from diffsr.losses.ssim import ssim

    rows = []
    for shape in sizes["ssim"]:
        def one(shape: tuple[int, ...] = shape) -> dict[str, Any]:
            gen = torch.Generator().manual_seed(0)
            pred = torch.rand(shape, generator=gen).to(device).requires_grad_(True)
            target = torch.rand(shape, generator=gen).to(device)

            def ours() -> None:
                (1 - ssim(pred, target, data_range=1.0, window=11, sigma=1.5, reduction="none")).sum().backward()

            ms = 1e3 * statistics.median(_timed(ours, device, sizes["repeat"]))
            row: dict[str, Any] = {"shape": list(shape), "diffsr_ms": round(ms, 3)}
            try:
                from pytorch_msssim import ssim as reference

                def peer() -> None:
                    (1 - reference(pred, target, data_range=1.0, win_size=11, win_sigma=1.5,
                                   size_average=False)).sum().backward()

                row["pytorch_msssim_ms"] = round(1e3 * statistics.median(_timed(peer, device, sizes["repeat"])), 3)
                row["speedup"] = round(row["pytorch_msssim_ms"] / row["diffsr_ms"], 2)
                row["target"] = "speedup >= 1"
            except ImportError:
                row["pytorch_msssim"] = "skipped: not installed (gpu_check.sh --wheels)"
            return row

        rows.append(_guard(f"ssim fwd+bwd {'x'.join(map(str, shape))}", one))
    return rows


def inference(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    from diffsr.sampling.infer import super_resolve

    loaded = random_demo_model([], device)
    side = sizes["lr"]
    lr = torch.rand(1, 1, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    row: dict[str, Any] = {"lr": side, "scale": 4, "hr": side * 4, "preset": "demo (random weights)"}
    for steps in sizes["steps"]:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        ts = _timed(lambda s=steps: super_resolve(loaded, lr, tile=0, steps=s, seed=0), device, sizes["repeat"], 1)
        row[f"steps_{steps}_s"] = round(statistics.median(ts), 4)
        if device.type == "cuda":
            row[f"steps_{steps}_peak_mb"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
    row["target_s_at_4_steps"] = 0.1
    return row


def run_speed(device: torch.device, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    rows = throughput(device, sizes)
    rows.append(_guard("haar level-2 round trip", lambda: wavelet(device, sizes)))
    rows += ssim_speed(device, sizes)
    rows.append(_guard("inference latency 512^2 x4" if sizes is REAL else "inference latency (dry-run size)",
                       lambda: inference(device, sizes)))
    return rows


# ----------------------------------------------------------------------------- runs


def _means(entry: Any) -> dict[str, Any]:
    """{metric: mean} from one method's summary in metrics.json (whatever nesting it uses)."""
    out: dict[str, Any] = {}
    if isinstance(entry, dict):
        for key, value in entry.items():
            if isinstance(value, dict) and isinstance(value.get("mean"), int | float):
                out[key] = value["mean"]
    return out


def runs(out: Path, train_seconds: float) -> dict[str, Any]:
    """The time-budgeted trainings (steps reached, images seen) and their eval's mean metrics."""
    from diffsr.config import load_config as load
    from diffsr.train.checkpoint import read_checkpoint

    rows = []
    for run in sorted((out / "runs").glob("*")):
        def one(run: Path = run) -> dict[str, Any]:
            ckpt = read_checkpoint(run)
            cfg = load(str(run / "config.yaml")) if (run / "config.yaml").exists() else None
            step = int(ckpt["state"]["step"])
            row: dict[str, Any] = {"run": run.name, "time_limit_s": train_seconds, "steps": step}
            if cfg is not None:
                row.update(batch=cfg.data.batch_size, patch=cfg.data.patch_size,
                           mixed_precision=cfg.train.mixed_precision,
                           images_per_s=round(step * cfg.data.batch_size / train_seconds, 2))
            return row

        rows.append(_guard(f"training {run.name}", one))
    metrics_path = out / "eval" / "metrics.json"
    if metrics_path.exists():
        def evaluated() -> dict[str, Any]:
            metrics = json.loads(metrics_path.read_text())
            summary = metrics.get("summary", metrics.get("methods", {}))
            return {"methods": {name: _means(entry) for name, entry in summary.items()}}

        rows.append(_guard("diffsr eval on roadscene/test", evaluated))
    else:
        rows.append({"name": "diffsr eval on roadscene/test", "status": "error", "error": "no eval/metrics.json"})
    return {"rows": rows}


# ----------------------------------------------------------------------------- summary


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)[:80]
    return str(value)


def summary(out: Path) -> dict[str, Any]:
    """Merge every JSON the script wrote under ``out`` into summary.json and a markdown page."""
    parts: dict[str, Any] = {}
    for path in sorted(out.glob("*.json")):
        if path.name != "summary.json":
            parts[path.stem] = json.loads(path.read_text())
    failed = [row["name"] for part in parts.values() for row in part.get("rows", [])
              if row.get("status") == "error" or row.get("pass") is False]
    result = {"parts": parts, "failed": failed}
    lines = ["# diffsr GPU check", ""]
    for stem, part in parts.items():
        lines += [f"## {stem}", ""]
        meta = {k: v for k, v in part.items() if k != "rows"}
        if meta:
            lines += [f"- {k}: {_cell(v)}" for k, v in meta.items()] + [""]
        for row in part.get("rows", []):
            lines.append(f"### {row.get('name', '?')}: {row.get('status', '?')}"
                         + ("" if "pass" not in row else (" - PASS" if row["pass"] else " - FAIL")))
            lines += [f"- {k}: {_cell(v)}" for k, v in row.items() if k not in ("name", "status", "pass")]
            lines.append("")
    lines += ["## verdict", "", "failed: " + (", ".join(failed) if failed else "none"), ""]
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "summary.md").write_text("\n".join(lines))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["checks", "speed", "runs", "summary"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, one repeat (CPU, < 2 minutes)")
    parser.add_argument("--data", type=Path, default=None, help="training images for the checks (default: generated)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-seconds", type=float, default=240.0, help="runs: the trainings' time limit")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "runs":
        (args.out / "runs.json").write_text(json.dumps(runs(args.out, args.train_seconds), indent=2) + "\n")
        return
    if args.part == "summary":
        result = summary(args.out)
        print(f"[gpu_check] summary: {args.out / 'summary.md'}; failed: {result['failed'] or 'none'}")
        sys.exit(1 if result["failed"] else 0)
    device = torch.device(args.device)
    sizes = DRY if args.dry_run else REAL
    meta = {**hardware(), "device": str(device), "dry_run": args.dry_run}
    rows = run_checks(device, sizes, args.data, args.out) if args.part == "checks" else run_speed(device, sizes)
    meta["loadavg_after"] = list(os.getloadavg())
    (args.out / f"{args.part}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
