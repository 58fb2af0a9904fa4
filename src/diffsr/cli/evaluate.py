"""Glue behind ``diffsr eval`` and ``diffsr bench``: parse method specs, load data, call eval."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from diffsr.config import EvalConfig, load_config
from diffsr.core.atomic import remove_stale_temporaries
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
    samples: int = 1,
    degradation: str = "bicubic",
    lr_dir: Path | None = None,
    seed: int = 0,
    crop: int | None = None,
    eval_set: list[str] | None = None,
    console: Any = None,
    bicubic: str = "torch",
    detail_sweep: list[float] | None = None,
    normalization: tuple[str | None, tuple[float, float] | None, tuple[float, float] | None] = (None, None, None),
    volume_index: int | None = None,
) -> str:
    """Evaluate ``methods`` (bicubic | RUN | edsr:RUN ...) on the images under ``data``.

    The LR inputs come from ``lr_dir`` (real pairs, same file names) or are made from each HR
    by ``degradation`` (a registered name, seeded per image by ``seed``); ``crop`` keeps the
    centre crop x crop of every test image. ``eval_set``: ``eval.KEY=VALUE`` overrides of the
    metric conventions (:class:`~diffsr.config.EvalConfig`), applied after ``crop_border`` /
    ``lpips_weights``. ``bicubic``: "torch" or "matlab" (MATLAB imresize) for the LR images of
    the bicubic degradation and for the bicubic baseline. ``detail_sweep``: the ``sample.detail``
    values every diffusion run is also evaluated at (the perception-distortion plane); None or
    empty: none. A run with a ``calibration.json`` also gets its intervals' risk and width on these
    images, next to the constant band and the raw std (``uncertainty`` in metrics.json).
    ``normalization``: (policy, percentiles, window) of the HR images (None: ``auto`` per file);
    ``volume_index``: the volume of a 4-D NIfTI. ``out`` may not lie inside ``data`` or ``lr_dir``.
    """
    from diffsr.data.datasets import is_rgb
    from diffsr.eval.evaluate import evaluate
    from diffsr.eval.metrics import Conventions

    _check_eval_args(data=data, methods=methods, scale=scale, samples=samples, degradation=degradation,
                     lr_dir=lr_dir, crop=crop, channels=channels, steps=steps, limit=limit, out=out)
    if bicubic not in ("torch", "matlab"):
        raise DiffsrError(f"--bicubic: '{bicubic}' is not one of torch, matlab")
    eval_cfg = eval_config(eval_set, crop_border=crop_border, lpips_weights=lpips_weights)
    remove_stale_temporaries(out)  # left by an earlier eval killed mid-write
    items = _items(data, scale, channels, limit=limit, degradation=degradation, bicubic=bicubic, lr_dir=lr_dir,
                   seed=seed, crop=crop, normalization=normalization, volume_index=volume_index)
    _check_crop_border(items, eval_cfg.crop_border if eval_cfg.crop_border is not None else scale)
    resolved, sweep = _resolve_methods(methods, scale, steps or [], bicubic=bicubic)
    _warn_normalization(items, resolved)
    details = _detail_sweeps(methods, resolved, scale, detail_sweep or [])
    conv = dataclasses.replace(Conventions.from_config(eval_cfg, scale), bicubic=bicubic)
    if channels == 1 and any(is_rgb(item.record) for item in items):
        conv = dataclasses.replace(conv, rgb_input=(
            "channels=1: each RGB file's HR is its BT.601 studio-swing Y "
            "(65.481 R + 128.553 G + 24.966 B + 16) / 255 in [16/255, 235/255], made before the LR; "
            "SR and HR are compared on that Y"))
    result = evaluate(
        items, resolved, conv, out, steps_sweep=sweep or None, detail_sweep=details or None, scale=scale,
        reproduce="diffsr " + " ".join(sys.argv[1:]) if sys.argv else None,
        inputs={"data": str(data),
                "lr": f"files in {lr_dir}" if lr_dir else f"{degradation} ({bicubic} bicubic) x{scale}, seed {seed}",
                "crop": f"centre {crop}x{crop}" if crop else "none"},
    )
    lines = [f"evaluated {len(items)} images, x{scale}; outputs in {out}/"]
    lines += interval_check(items, methods, out, result, scale=scale, crop_border=conv.crop_border)
    calibration_lines = []
    if samples > 1:
        calibration_lines = calibration_check(items, methods, out, scale=scale, samples=samples,
                                              steps=steps[0] if steps else None,
                                              crop_border=conv.crop_border)
    for name in result["methods"]:
        s = result["summary"][name]
        parts = [f"{m} {s[m]['mean']:.4f}" for m in ("psnr", "ssim", "sharpness")
                 if m in s and s[m]["mean"] is not None]
        lines.append(f"  {name:<20} " + "  ".join(parts))
    return "\n".join(lines + calibration_lines)


def _detail_sweeps(methods: list[str], resolved: dict[str, Any], scale: int, details: list[float]
                   ) -> dict[str, dict[float, Any]]:
    """display name -> {detail: method} for every diffusion run among ``methods`` (not bicubic or baselines)."""
    from diffsr.sampling.infer import method_from_spec

    for d in details:
        if not 0 <= d <= 1:
            raise DiffsrError(f"--detail-sweep: {d} is not in [0, 1]")
    out: dict[str, dict[float, Any]] = {}
    for (name, fn), spec in zip(resolved.items(), methods, strict=True):
        loaded = getattr(fn, "loaded", None)
        if not details or loaded is None or loaded.model.is_baseline or "@" in spec:
            continue
        out[name] = {d: method_from_spec(f"{spec}@detail={d}", scale)[1] for d in details}
    return out


def interval_check(items: list[Any], methods: list[str], out: Path, result: dict[str, Any], *, scale: int,
                   crop_border: int) -> list[str]:
    """For every run with a calibration: its intervals' risk and width on the test images, against the
    constant band and the raw std; added to metrics.json / report.md with a coverage-vs-width plot."""
    import json

    from diffsr.cli.calibrate import calibration_folder
    from diffsr.core.atomic import atomic_write_text
    from diffsr.sampling.calibration import (
        find_calibration,
        image_intervals,
        interval_report,
        plot_risk_vs_width,
        sampling_options,
    )
    from diffsr.sampling.infer import load_model

    lines, reports = [], {}
    for spec in methods:
        if spec == "bicubic" or ":" in spec or "@" in spec or not Path(spec).is_dir():
            continue
        calibration = find_calibration(calibration_folder(Path(spec)))
        if calibration is None:
            continue
        loaded = load_model(spec)
        samples, steps = calibration.sampling["samples"], calibration.sampling["steps"]
        calibration.check_sampling(sampling_options(loaded, samples, steps), where=f"{spec}/calibration.json")
        images = [image_intervals(loaded, item, samples=samples, steps=steps, kind=calibration.interval,  # type: ignore[arg-type]
                                  alpha=calibration.alpha, border=crop_border,
                                  mask_threshold=calibration.mask_threshold) for item in items]
        name = loaded.config.name if loaded.config.name != "custom" else Path(spec).name
        rep = interval_report(images, calibration)
        reports[name] = rep
        plot_risk_vs_width(rep, out / f"coverage_vs_width_{name}.png", title=name)
        lines.append(f"  intervals {name}: risk {rep['calibrated']['risk']['mean']:.4f} (target "
                     f"{calibration.alpha:g}), width {rep['calibrated']['width']:.4f}; constant band risk "
                     f"{rep['constant_band']['risk']['mean']:.4f}, width {rep['constant_band']['width']:.4f}; "
                     f"raw std risk {rep['raw_std']['risk']['mean']:.4f}")
    if reports:
        result["uncertainty"] = reports
        atomic_write_text(out / "metrics.json", json.dumps(_json_ready(result), indent=2, allow_nan=False) + "\n")
        _append_interval_report(out / "report.md", reports)
    return lines


def _json_ready(obj: Any) -> Any:
    from diffsr.eval.evaluate import _json_safe

    return _json_safe(obj)


def _append_interval_report(path: Path, reports: dict[str, Any]) -> None:
    from diffsr.core.atomic import atomic_write_text

    lines = ["", "## Calibrated intervals", "",
             "Risk: the fraction of a test image's pixels outside its interval (mean over images, 95 % CI); width: "
             "mean interval width in [0, 1] units. calibrated: the run's lam-hat; constant band: the 1-step output "
             "+- a constant half-width fitted the same way (no model uncertainty); raw std: lam = 1.", "",
             "| run | guarantee | intervals | risk [95 % CI] | width |", "|---|---|---|---|---|"]
    for name, rep in reports.items():
        guarantee = (f"CRC, alpha {rep['alpha']:g}" if rep["delta"] is None
                     else f"RCPS, alpha {rep['alpha']:g}, delta {rep['delta']:g}")
        for kind in ("calibrated", "constant_band", "raw_std"):
            if kind in rep:
                r = rep[kind]["risk"]
                lines.append(f"| {name} | {guarantee} | {kind} | {r['mean']:.4f} [{r['ci95'][0]:.4f}, "
                             f"{r['ci95'][1]:.4f}] | {rep[kind]['width']:.4f} |")
        lines.append(f"\n![coverage vs width {name}](coverage_vs_width_{name}.png)\n")
    atomic_write_text(path, path.read_text() + "\n".join(lines) + "\n")


def _items(data: Path, scale: int, channels: int, *, limit: int | None, degradation: str, bicubic: str,
           lr_dir: Path | None, seed: int, crop: int | None, normalization: tuple[Any, Any, Any],
           volume_index: int | None) -> list[Any]:
    """The evaluation items of ``diffsr eval`` (see :func:`~diffsr.data.eval_items.load_eval_items`)."""
    from diffsr.data.datasets import load_eval_items
    from diffsr.data.degrade import BicubicDegradation

    policy, percentiles, window = normalization
    deg: Any = BicubicDegradation(scale, kernel=bicubic) if degradation == "bicubic" else degradation  # type: ignore[arg-type]
    items = load_eval_items(data, scale, channels, max_slices=limit, degradation=deg, lr_dir=lr_dir, seed=seed,
                            crop=crop, normalization=None if policy == "auto" else policy,
                            percentiles=percentiles or (0.5, 99.5), window=window, volume_index=volume_index)
    return items[:limit] if limit is not None else items


def _warn_normalization(items: list[Any], resolved: dict[str, Any]) -> None:
    """Warn (once per run) when a run was trained with a normalization other than the one the
    test images are mapped with: its inputs are not in the units it learned."""
    import logging

    from diffsr.data.normalize import fit_intensity

    for name, fn in resolved.items():
        loaded = getattr(fn, "loaded", None)
        if loaded is None or not items:
            continue
        cfg = loaded.config.data
        differ, seen = [], set()
        for item in items:  # one check per file (the slices of a volume share its record)
            if item.intensity is None or item.record is None or id(item.record) in seen:
                continue
            seen.add(id(item.record))
            try:
                trained = fit_intensity(item.record, cfg.normalization, tuple(cfg.percentiles),
                                        tuple(cfg.window) if cfg.window else None).policy
            except DiffsrError:  # a window the file cannot give: a mismatch as well
                trained = cfg.normalization
            if trained != item.intensity.policy:
                differ.append((item, trained))
        if differ:
            item, trained = differ[0]
            logging.getLogger(__name__).warning(
                "%s: trained with data.normalization %s (%s for %s), the test images are mapped with %s "
                "(%d of %d files differ); pass --normalization %s to evaluate it in the units it learned",
                name, cfg.normalization, trained, Path(item.record.meta.get("path", item.name)).name,
                item.intensity.policy, len(differ), len(seen),
                cfg.normalization)


def _check_crop_border(items: list[Any], border: int) -> None:
    """One line when the border crop leaves nothing of an image (before any method runs)."""
    for item in items:
        h, w = item.hr.shape[-2:]
        if 2 * border >= min(h, w):
            raise DiffsrError(f"--crop-border {border}: leaves nothing of {item.name} ({w}x{h} after cropping to a "
                              f"multiple of the scale); at most {(min(h, w) - 1) // 2}")


def _check_eval_args(*, data: Path, methods: list[str], scale: int, samples: int, degradation: str,
                     lr_dir: Path | None, crop: int | None, channels: int = 1, steps: list[int] | None = None,
                     limit: int | None = None, out: Path | None = None) -> None:
    """One-line errors for the arguments of ``diffsr eval`` (before any image is read)."""
    from diffsr.cli.options import all_at_least, at_least, out_not_inside
    from diffsr.core.atomic import check_output_folder
    from diffsr.data.degrade import DEGRADATIONS

    at_least(samples, 1, "--samples")
    all_at_least(steps, 1, "--steps")
    at_least(limit, 1, "--limit")
    if channels not in (1, 3):
        raise DiffsrError(f"--channels: {channels} is not 1 (grey / Y) or 3 (RGB)")
    if not methods:
        raise DiffsrError("--method: give at least one (bicubic, a run folder, edsr:RUN ...)")
    if scale not in (2, 3, 4, 8):
        raise DiffsrError(f"--scale: {scale} is not one of 2, 3, 4, 8")
    if not data.exists():
        raise DiffsrError(f"{data}: no such file or folder")
    if degradation not in DEGRADATIONS:
        raise DiffsrError(
            f"--degradation: unknown '{degradation}' (one of {', '.join(sorted(DEGRADATIONS.names()))})"
        )
    if lr_dir is not None and not lr_dir.is_dir():
        raise DiffsrError(f"--lr-dir: {lr_dir} is not a folder")
    if crop is not None and crop < 8:
        raise DiffsrError(f"--crop: {crop} is too small (at least 8)")
    if out is not None:
        check_output_folder(out)
        out_not_inside(out, data, "--data")
        out_not_inside(out, lr_dir, "--lr-dir")


def _resolve_methods(methods: list[str], scale: int, steps: list[int], *, bicubic: str = "torch"
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(display name -> method, display name -> {steps: method} for a steps sweep) from CLI specs."""
    from diffsr.sampling.infer import method_from_spec

    resolved: dict[str, Any] = {}
    sweep: dict[str, dict[int, Any]] = {}
    for spec in methods:
        name, fn = method_from_spec(spec, scale, steps=steps[0] if steps else None, bicubic=bicubic)
        base, k = name, 2
        while name in resolved:  # two runs of the same preset: keep both
            name, k = f"{base}-{k}", k + 1
        resolved[name] = fn
        if len(steps) > 1 and spec != "bicubic" and ":" not in spec:
            sweep[name] = {s: method_from_spec(spec, scale, steps=s)[1] for s in steps}
    return resolved, sweep


def eval_config(overrides: list[str] | None, *, crop_border: int | None = None,
                lpips_weights: str | None = None) -> EvalConfig:
    """An :class:`EvalConfig` from ``--crop-border`` / ``--lpips-weights`` and ``--set eval.KEY=VALUE``
    overrides, parsed and checked like any config override (one-line ConfigError with a hint)."""
    from diffsr.config import apply_override, parse_override, validate
    from diffsr.core.errors import ConfigError

    section: dict[str, Any] = {}
    if crop_border is not None:
        section["crop_border"] = crop_border
    if lpips_weights is not None:
        section["lpips_weights"] = lpips_weights
    data: dict[str, Any] = {"eval": section}
    for item in overrides or []:
        parts, value = parse_override(item)
        if len(parts) != 2 or parts[0] != "eval":
            raise ConfigError(f"--set {item!r}: diffsr eval takes eval.KEY=VALUE "
                              f"(keys: {', '.join(EvalConfig.model_fields)})")
        apply_override(data, parts, value)
    return validate(data, "--set").eval


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
    from diffsr.model import build_model

    if device == "cuda" and not torch.cuda.is_available():
        raise DiffsrError("--device cuda: CUDA is not available on this machine")
    if size < 16:
        raise DiffsrError(f"--size: {size} is too small (at least 16 pixels)")
    if repeat < 1:
        raise DiffsrError(f"--repeat: must be >= 1, got {repeat}")
    if steps and min(steps) < 1:
        raise DiffsrError(f"--steps: must be >= 1, got {min(steps)}")
    if out is not None:  # a JSON file: checked before any model is timed
        from diffsr.core.atomic import check_output_folder

        if out.is_dir():
            raise DiffsrError(f"--out {out}: is a folder; give a file name for the JSON")
        check_output_folder(out.parent)
    rows = []
    for source in configs:
        cfg = load_config(source)
        model = build_model(cfg).to(device).eval()
        c, k = cfg.data.channels, cfg.data.scale
        for s in steps or [cfg.sample.steps or model.process.default_steps]:

            def sample(lr_up: torch.Tensor, lr: torch.Tensor, s: int = s, model: Any = model) -> torch.Tensor:
                # a feed-forward baseline maps the LR itself; a diffusion model samples from lr_up
                return model.sample(lr_up, steps=s, lr=lr if model.is_baseline else None)

            row = benchmark_model(sample, [(1, c, size, size), (1, c, max(1, size // k), max(1, size // k))],
                                  steps=1, device=device, repeat=repeat, name=f"{cfg.name} ({s} steps)")
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


def calibration_check(
    items: list[Any], methods: list[str], out: Path, *, scale: int, samples: int, steps: int | None, crop_border: int
) -> list[str]:
    """Draw N samples per image for every diffsr run in ``methods``; is the std map calibrated?

    Writes ``calibration.json`` (Pearson/Spearman correlation of std with |mean - HR|, the
    binned error-vs-std curve, coverage) and ``calibration.png``.
    """
    import json

    from diffsr.core.atomic import atomic_write_text
    from diffsr.sampling.infer import load_model, super_resolve
    from diffsr.sampling.uncertainty import CalibrationAccumulator, plot_error_vs_std

    reports: dict[str, Any] = {}
    lines = []
    for spec in methods:
        if spec == "bicubic" or ":" in spec:
            continue  # deterministic methods have no spread
        loaded = load_model(spec)
        acc = CalibrationAccumulator(n_samples=samples, crop_border=crop_border)
        for item in items:
            draws = torch.stack([
                super_resolve(loaded, item.lr, steps=steps, seed=loaded.config.sample.seed + k).cpu()
                for k in range(samples)
            ])
            acc.add(draws.mean(0), draws.std(0, unbiased=True), item.hr)
        report = acc.result()
        name = loaded.config.name if loaded.config.name != "custom" else Path(spec).name
        reports[name] = report
        lines.append(f"  calibration {name}: pearson(std, |err|) {report.pearson:.3f}, "
                     f"spearman {report.spearman:.3f} ({samples} samples)")
    if reports:
        atomic_write_text(out / "calibration.json",
                          json.dumps({k: v.to_dict() for k, v in reports.items()}, indent=2, default=float))
        plot_error_vs_std({k: v.curve for k, v in reports.items()}, out / "calibration.png", n_samples=samples)
    return lines
