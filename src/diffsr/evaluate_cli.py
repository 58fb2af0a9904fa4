"""Glue behind ``diffsr eval`` and ``diffsr bench``: parse method specs, load data, call eval."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from diffsr.config import EvalConfig, load_config
from diffsr.core.errors import DiffsrError


def run_eval(
    *,
    data: Path,
    methods: list[str],
    out: Path,
    scale: int,
    steps: list[int] | None = None,
    channels: int = 1,
    limit: int | None = None,
    crop_border: int | None = None,
    lpips_weights: str | None = None,
    console: Any = None,
) -> str:
    """Evaluate ``methods`` (bicubic | RUN | edsr:RUN ...) on the images under ``data``."""
    from diffsr.data.datasets import load_eval_items
    from diffsr.eval.evaluate import evaluate
    from diffsr.eval.metrics import Conventions
    from diffsr.infer import method_from_spec

    if not methods:
        raise DiffsrError("--method: give at least one (bicubic, a run folder, edsr:RUN ...)")
    if scale not in (2, 3, 4, 8):
        raise DiffsrError(f"--scale: {scale} is not one of 2, 3, 4, 8")
    if not data.exists():
        raise DiffsrError(f"{data}: no such file or folder")
    items = load_eval_items(data, scale, channels, max_slices=limit)
    if limit is not None:
        items = items[:limit]
    steps = steps or []
    resolved: dict[str, Any] = {}
    sweep: dict[str, dict[int, Any]] = {}
    for spec in methods:
        name, fn = method_from_spec(spec, scale, steps=steps[0] if steps else None)
        base, k = name, 2
        while name in resolved:  # two runs of the same preset: keep both
            name, k = f"{base}-{k}", k + 1
        resolved[name] = fn
        if len(steps) > 1 and spec != "bicubic" and ":" not in spec:
            sweep[name] = {s: method_from_spec(spec, scale, steps=s)[1] for s in steps}
    conv = Conventions.from_config(
        EvalConfig(crop_border=crop_border, lpips_weights=lpips_weights), scale
    )
    result = evaluate(
        items, resolved, conv, out, steps_sweep=sweep or None, scale=scale,
        reproduce="diffsr " + " ".join(sys.argv[1:]) if sys.argv else None,
    )
    lines = [f"evaluated {len(items)} images, x{scale}; outputs in {out}/"]
    for name in result["methods"]:
        s = result["summary"][name]
        parts = [f"{m} {s[m]['mean']:.4f}" for m in ("psnr", "ssim", "sharpness")
                 if m in s and s[m]["mean"] is not None]
        lines.append(f"  {name:<20} " + "  ".join(parts))
    return "\n".join(lines)


def run_bench(
    *,
    configs: list[str],
    baselines: list[str],
    size: int,
    steps: list[int] | None,
    device: str,
    repeat: int,
    out: Path | None,
) -> str:
    """Parameters, FLOPs, latency and memory for presets (random weights) and baselines."""
    from diffsr.eval.bench import benchmark_model, format_table, write_json
    from diffsr.train.model import build_model

    if device == "cuda" and not torch.cuda.is_available():
        raise DiffsrError("--device cuda: CUDA is not available on this machine")
    rows = []
    for source in configs:
        cfg = load_config(source)
        model = build_model(cfg).to(device).eval()
        c = cfg.data.channels
        for s in steps or [cfg.sample.steps or model.process.default_steps]:

            def sample(lr_up: torch.Tensor, s: int = s, model: Any = model) -> torch.Tensor:
                return model.sample(lr_up, steps=s)

            row = benchmark_model(sample, [(1, c, size, size)], steps=1, device=device, repeat=repeat,
                                  name=f"{cfg.name} ({s} steps)")
            row["params"] = sum(p.numel() for p in model.parameters())
            row["steps"] = s  # the timed call runs the whole s-step sampler once
            row["sampling_steps"] = s
            rows.append(row)
    for name in baselines:
        from diffsr.nets.baselines import build_baseline

        for scale in (4,):
            net = build_baseline(name, channels=1, scale=scale, size="tiny")
            rows.append(benchmark_model(net, [(1, 1, size // scale, size // scale)], steps=1, device=device,
                                        repeat=repeat, name=f"{name} x{scale}"))
    if out is not None:
        write_json(out, rows)
    return format_table(rows)
