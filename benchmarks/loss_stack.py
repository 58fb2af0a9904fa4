"""Cost of the loss stack: one training step with pixel + SSIM + FFL + edge terms vs diffusion only.

    python benchmarks/loss_stack.py [--device cpu|cuda] [--repeat N] [--threads N] [--quick] [--profile]

The model is the demo preset's (ResShift T 4 in Haar level-2 'all' wavelet space, tiny UNet,
grayscale, batch 16, 64x64 patches), built with ``diffsr.model.build_model``; the loss
stacks with ``diffsr.losses.build_loss_stack``. One step = SRModel forward (encode, noise,
denoise, x0_hat) + loss stack + backward + AdamW step, as ``Trainer._forward``/``train_step``.
Three variants run interleaved (A, B, C, A, B, C, ...) after a warm-up, on the same batch:

- ``diffusion``: the diffusion term only (a stack with no terms);
- ``stack``: l1 + ssim + ffl + edge, every gate ``none``, weights > 0 - one shared decode;
- ``naive``: the same four terms in four separate stacks - four decodes (what a loop of
  independent losses would do).

The table gives the median wall-clock and process-CPU seconds per step and the ratios to the
diffusion-only step (target: stack / diffusion <= 1.3). ``--profile`` adds the torch.profiler
top ops (self CPU time) of one step of each variant. Results: benchmarks/results/loss_stack.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from diffsr.config import LossesConfig, load_config  # noqa: E402
from diffsr.losses import build_loss_stack  # noqa: E402
from diffsr.model import SRModel, build_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "loss_stack.json"

#: the four pixel-space terms, every gate open, weights > 0
TERMS: list[dict[str, Any]] = [
    {"name": "l1", "weight": {"kind": "constant", "value": 0.5}},
    {"name": "ssim", "weight": {"kind": "constant", "value": 0.2}},
    {"name": "ffl", "weight": {"kind": "constant", "value": 0.01}},
    {"name": "edge", "weight": {"kind": "constant", "value": 0.06}},
]


def hardware() -> dict[str, Any]:
    """CPU model, core count, torch version, date, load average, command (for every result file)."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except OSError:
        pass
    info = {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_before": list(os.getloadavg()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def make_batch(batch: int, size: int, scale: int, device: torch.device, seed: int = 0) -> dict[str, Tensor]:
    """Smooth random HR images in [0, 1] (B, 1, size, size) and their bicubic-upsampled x``scale`` LR."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 1, size // 8, size // 8, generator=gen)
    hr = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    hr = (hr + 0.05 * torch.randn(hr.shape, generator=gen)).clamp(0, 1)
    lr = F.interpolate(hr, scale_factor=1 / scale, mode="area")
    lr_up = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    b = {"hr": hr, "lr_up": lr_up, "lr": lr, "mask": torch.ones(batch, 1, size, size),
         "paired": torch.ones(batch, dtype=torch.bool)}
    return {k: v.to(device) for k, v in b.items()}


def make_step(
    model: SRModel, stacks: list[torch.nn.Module], batch: dict[str, Tensor], lr: float = 5e-4
) -> Callable[[int], float]:
    """step(i) -> loss: forward, every stack in ``stacks`` (summed), backward, AdamW step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step(i: int) -> float:
        model.train()
        gen = torch.Generator(device=batch["hr"].device).manual_seed(1000 + i)
        out = model(batch["hr"], batch["lr_up"], generator=gen, lr=batch["lr"])
        decode = model.decoder_for(out.zc)
        total: Tensor | float = 0.0
        for stack in stacks:
            loss, _ = stack(z0_hat=out.z0_hat, t=out.t, step=i, decode=decode, hr=batch["hr"], z0=out.z0.z,
                            mask=batch["mask"], paired=batch["paired"], diffusion=out.diffusion,
                            last_layer=model.last_layer)
            total = total + loss
        assert isinstance(total, Tensor)
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(total.detach())

    return step


def variants(model: SRModel, channels: int) -> dict[str, list[torch.nn.Module]]:
    """name -> the loss stacks one step sums (diffusion counted once in each variant)."""
    diffusion_only = build_loss_stack(LossesConfig(terms=[]), channels=channels)
    shared = build_loss_stack(LossesConfig(terms=TERMS), channels=channels)
    # naive: the diffusion stack plus one single-term stack per term (diffusion weight 0), each decoding
    naive = [diffusion_only] + [
        build_loss_stack(LossesConfig(terms=[term], diffusion_weight=0.0), channels=channels) for term in TERMS
    ]
    return {"diffusion": [diffusion_only], "stack": [shared], "naive": naive}


def count_decodes(model: SRModel, stacks: list[torch.nn.Module], batch: dict[str, Tensor]) -> int:
    """Number of codec.decode calls in one step of a variant (checks the variant does what it says)."""
    calls = 0
    original = model.codec.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    model.codec.decode = counting  # type: ignore[method-assign]
    try:
        make_step(model, stacks, batch, lr=0.0)(0)
    finally:
        del model.codec.decode
    return calls


def top_ops(step: Callable[[int], float], n: int = 12) -> list[dict[str, Any]]:
    """torch.profiler: the ``n`` ops with the largest self CPU time in one step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(10_000)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2), "calls": e.count} for e in events]


def term_costs(batch: dict[str, Tensor], repeat: int) -> list[dict[str, Any]]:
    """Each term module alone, forward + backward w.r.t. the prediction, on the HR-sized batch (median ms)."""
    from diffsr.losses.build import build_term_module

    cfgs = LossesConfig(terms=TERMS).terms
    hr = batch["hr"]
    pred0 = (hr + 0.05 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(1)).to(hr.device)).clamp(0, 1)
    rows = []
    for cfg in cfgs:
        module = build_term_module(cfg, channels=hr.shape[1]).to(hr.device)
        wall, cpu = [], []
        for i in range(repeat + 1):
            pred = pred0.clone().requires_grad_(True)
            w, c = time.perf_counter(), time.process_time()
            module(pred, hr, batch["mask"]).sum().backward()
            if i:
                wall.append(time.perf_counter() - w)
                cpu.append(time.process_time() - c)
        rows.append({"term": cfg.name, "ms": round(statistics.median(wall) * 1e3, 2),
                     "cpu_ms": round(statistics.median(cpu) * 1e3, 2)})
    return rows


def run(device: torch.device, repeat: int, warmup: int, batch_size: int, size: int,
        profile: bool) -> dict[str, Any]:
    """Time the three variants interleaved; returns the result dict (without hardware)."""
    cfg = load_config("demo", [f"data.batch_size={batch_size}", f"data.patch_size={size}"])
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    batch = make_batch(batch_size, size, cfg.data.scale, device)
    stacks = variants(model, cfg.data.channels)
    decodes = {name: count_decodes(model, s, batch) for name, s in stacks.items()}
    # every variant trains its own copy of the same initial weights (same work per step)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    steps = {}
    models = {}
    for name, s in stacks.items():
        m = build_model(cfg).to(device)
        m.load_state_dict(state)
        models[name] = m
        steps[name] = make_step(m, s, batch)
    wall: dict[str, list[float]] = {n: [] for n in stacks}
    cpu: dict[str, list[float]] = {n: [] for n in stacks}
    for i in range(warmup + repeat):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            w, c = time.perf_counter(), time.process_time()
            step(i)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
    rows = []
    base_w, base_c = statistics.median(wall["diffusion"]), statistics.median(cpu["diffusion"])
    for name in stacks:
        mw, mc = statistics.median(wall[name]), statistics.median(cpu[name])
        rows.append({
            "variant": name,
            "terms": ["diffusion"] + ([t["name"] for t in TERMS] if name != "diffusion" else []),
            "decodes_per_step": decodes[name],
            "s_per_step": round(mw, 4),
            "min_s_per_step": round(min(wall[name]), 4),
            "cpu_s_per_step": round(mc, 4),
            "ratio_to_diffusion": round(mw / base_w, 3),
            "min_ratio_to_diffusion": round(min(wall[name]) / min(wall["diffusion"]), 3),
            "cpu_ratio_to_diffusion": round(mc / base_c, 3),
        })
    result: dict[str, Any] = {
        "benchmark": "training step (forward + loss stack + backward + AdamW), demo model",
        "model": "demo preset: ResShift T4, haar level-2 'all' codec, tiny UNet, grayscale",
        "params": sum(p.numel() for p in model.parameters()),
        "batch": batch_size,
        "patch": size,
        "repeat": repeat,
        "warmup": warmup,
        "statistic": "median over repeats (min_*: fastest run); variants interleaved",
        "target": "stack / diffusion <= 1.3",
        "rows": rows,
    }
    stack_row = next(r for r in rows if r["variant"] == "stack")
    result["met_wall"] = bool(stack_row["ratio_to_diffusion"] <= 1.3)
    result["met_cpu"] = bool(stack_row["cpu_ratio_to_diffusion"] <= 1.3)
    result["term_costs_fwd_bwd"] = term_costs(batch, repeat)
    if profile:
        result["profile_top_ops"] = {name: top_ops(step) for name, step in steps.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="repeat 3, warm-up 1")
    parser.add_argument("--profile", action="store_true", help="add torch.profiler top ops per variant")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeat, args.warmup = min(args.repeat, 3), 1
    device = torch.device(args.device)
    meta = hardware()
    result = run(device, args.repeat, args.warmup, args.batch, args.size, args.profile)
    meta["loadavg_after"] = list(os.getloadavg())
    result = {**meta, **result}
    print(f"loss stack cost, {args.device}, {torch.get_num_threads()} threads, batch {args.batch}x1x{args.size}^2, "
          f"median of {args.repeat} (load {meta['loadavg_before'][0]:.1f})")
    print(f"{'variant':<10} {'decodes':>7} {'s/step':>8} {'ratio':>6} {'cpu s/step':>10} {'cpu ratio':>9} "
          f"{'min s':>7} {'min ratio':>9}")
    for r in result["rows"]:
        print(f"{r['variant']:<10} {r['decodes_per_step']:>7} {r['s_per_step']:>8.3f} {r['ratio_to_diffusion']:>6.2f} "
              f"{r['cpu_s_per_step']:>10.3f} {r['cpu_ratio_to_diffusion']:>9.2f} {r['min_s_per_step']:>7.3f} "
              f"{r['min_ratio_to_diffusion']:>9.2f}")
    verdict = {True: "met", False: "NOT met"}
    print(f"target {result['target']}: wall {verdict[result['met_wall']]}, cpu time {verdict[result['met_cpu']]}")
    print("each term alone, forward+backward on the decoded batch: " + ", ".join(
        f"{r['term']} {r['ms']:.1f} ms (cpu {r['cpu_ms']:.1f})" for r in result["term_costs_fwd_bwd"]))
    for name, ops in result.get("profile_top_ops", {}).items():
        print(f"\ntop ops ({name}):")
        for op in ops[:8]:
            print(f"  {op['op']:<40} {op['self_cpu_ms']:>9.1f} ms  x{op['calls']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
