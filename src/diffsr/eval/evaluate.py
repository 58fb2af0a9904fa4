"""Run SR methods over a test set and write metrics.json, report.md and figures.

A *method* is any callable ``(lr (1, C, h, w) in [0, 1], scale) -> sr (1, C, H, W)``: bicubic,
a trained diffsr checkpoint wrapped by the CLI, a baseline network. :func:`evaluate` runs
every method on every item (timed), computes per-image metrics under one
:class:`~diffsr.eval.metrics.Conventions`, summarises them (mean, std, bootstrap CI),
compares every method with the first one on the same images, and writes the outputs
atomically.
"""

from __future__ import annotations

import datetime
import difflib
import heapq
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffsr.core.atomic import atomic_path, atomic_write_text
from diffsr.core.errors import DataError, DiffsrError
from diffsr.data.datasets import EvalItem  # noqa: F401  (re-exported: one EvalItem for data and eval)
from diffsr.data.degrade import upsample
from diffsr.eval import report
from diffsr.eval.metrics import METRIC_INFO, Conventions, MetricSuite
from diffsr.eval.stats import N_BOOT, paired_difference, summarize

log = logging.getLogger(__name__)

#: ``(lr (1, C, h, w) in [0, 1], scale) -> sr (1, C, H, W)``
Method = Callable[[Tensor, int], Tensor]


def bicubic(lr: Tensor, scale: int) -> Tensor:
    """The bicubic baseline: the same upsampling that makes every model's condition ``lr_up``."""
    return upsample(lr, scale, clamp=False)


def _get(item: Any, key: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _json_safe(obj: Any) -> Any:
    """Non-finite floats -> None (strict JSON has no NaN / Infinity); numpy -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _save_png(path: Path, img: Tensor, conv: Conventions) -> None:
    from PIL import Image

    arr = (img[0].detach().double().cpu().clamp(0, conv.data_range) / conv.data_range).numpy()
    sixteen = conv.quantize_bits is not None and conv.quantize_bits > 8 and arr.shape[0] == 1
    if sixteen:
        pil = Image.fromarray(np.round(arr[0] * 65535).astype(np.uint16))
    else:
        u8 = np.round(arr * 255).astype(np.uint8)
        pil = Image.fromarray(u8[0]) if u8.shape[0] == 1 else Image.fromarray(np.transpose(u8[:3], (1, 2, 0)))
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")


class _Runner:
    """Runs one method on one LR image: seeded, no grad, timed."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.device, self.seed = device, seed

    def __call__(
        self, name: str, fn: Method, lr: Tensor, scale: int, hr: Tensor, index: int, item_name: str,
        measurement: Tensor | None = None,
    ) -> tuple[Tensor, float]:
        # same noise for every method on an image, different across images
        torch.manual_seed(self.seed + index)
        lr_dev = lr.to(self.device)
        # a raw measurement (complex k-space) goes to the methods that project onto it
        extra = {"measurement": measurement.to(self.device)} if (
            measurement is not None and getattr(fn, "accepts_measurement", False)) else {}
        _sync(self.device)
        start = time.perf_counter()
        with torch.no_grad():
            sr = fn(lr_dev, scale, **extra)
        _sync(self.device)
        seconds = time.perf_counter() - start
        if not isinstance(sr, Tensor) or sr.shape != hr.shape:
            got = tuple(sr.shape) if isinstance(sr, Tensor) else type(sr).__name__
            raise DiffsrError(f"method '{name}' returned {got} for '{item_name}', expected {tuple(hr.shape)}")
        return sr.detach().cpu(), seconds


def _scale_of(hr: Tensor, lr: Tensor, name: str) -> int:
    if hr.ndim != 4 or lr.ndim != 4 or hr.shape[:2] != lr.shape[:2] or hr.shape[0] != 1:
        raise DataError(
            f"{name}: expected hr (1, C, H, W) and lr (1, C, h, w), got "
            f"{tuple(hr.shape)} and {tuple(lr.shape)}"
        )
    (h, w), (lh, lw) = hr.shape[-2:], lr.shape[-2:]
    if h % lh or w % lw or h // lh != w // lw:
        raise DataError(f"{name}: HR {h}x{w} is not an integer multiple of LR {lh}x{lw}")
    return h // lh


def _montage_selection(items: list[Any], max_volumes: int, per_volume: int) -> dict[str, list[int]]:
    """volume -> indices of up to ``per_volume`` evenly spaced slices (by slice_index)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        vol = _get(item, "volume")
        if vol is not None:
            groups.setdefault(str(vol), []).append(i)
    chosen: dict[str, list[int]] = {}
    for vol, idx in list(groups.items())[:max_volumes]:
        if len(idx) < 2:
            continue

        def order(i: int) -> tuple[bool, int, int]:
            position = _get(items[i], "slice_index")
            return position is None, position or 0, i

        idx = sorted(idx, key=order)
        picks = np.unique(np.linspace(0, len(idx) - 1, min(per_volume, len(idx))).round().astype(int))
        chosen[vol] = [idx[p] for p in picks]
    return chosen


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`evaluate` runs; every field defaults to what ``evaluate`` always did.

    steps_sweep: method name -> {sampling steps: method}; gives the metrics-vs-steps table
        and plot.
    detail_sweep: method name -> {detail in [0, 1]: method}; gives the perception-distortion
        table and plane (PSNR against sharpness and LPIPS, each method a point, each swept run
        a line from faithful to realistic).
    lr_key, hr_key: where an item keeps its LR and HR images.
    scale: checked against every item (inferred from the first item when None).
    device: where the LR input is placed before a method is called (and what the timing
        synchronises); metrics are computed on the CPU in float64.
    lpips, ms_ssim: compute these metrics too.
    figures: write the figures (metrics bars, steps sweep, zoomed crops, slice montages).
    save_outputs: also write every SR image to ``out_dir/outputs/<method>/<item>.png``.
    highlight: the method whose error map the crop figures show (default: best mean PSNR
        among the non-reference methods).
    n_crops: how many images get a zoomed-crop figure (those where the methods differ most).
    reproduce: the command that regenerates the results (metrics.json and the report).
    title: the report's title (default "diffsr evaluation").
    seed: ``torch.manual_seed(seed + image index)`` before each method call, so stochastic
        samplers see the same noise per image whatever the method order; also seeds the
        bootstrap.
    n_boot: bootstrap resamples of every confidence interval.
    inputs: how the test pairs were made (data, degradation, seed, crop ...); written to
        metrics.json ``inputs`` and to the report's notes.
    """

    steps_sweep: Mapping[str, Mapping[int, Method]] | None = None
    detail_sweep: Mapping[str, Mapping[float, Method]] | None = None
    lr_key: str = "lr"
    hr_key: str = "hr"
    scale: int | None = None
    device: str | torch.device = "cpu"
    lpips: bool = True
    ms_ssim: bool = False
    figures: bool = True
    save_outputs: bool = False
    highlight: str | None = None
    n_crops: int = 2
    reproduce: str | None = None
    title: str | None = None
    seed: int = 0
    n_boot: int = N_BOOT
    inputs: Mapping[str, Any] | None = None


def _options(options: EvalOptions | None, kwargs: Mapping[str, Any]) -> EvalOptions:
    """``options`` (default: all defaults) with the keyword arguments of :func:`evaluate` applied."""
    known = {f.name for f in fields(EvalOptions)}
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"evaluate() got an unexpected keyword argument {key!r}{hint}")
    return replace(options or EvalOptions(), **kwargs)


#: (mean spread of the methods in the crop, -item index, method -> sr): a min-heap of the
#: ``n_crops`` items where the methods differ most
_CropHeap = list[tuple[float, int, dict[str, Tensor]]]


@dataclass
class _Runs:
    """What running every method on every item gave: metrics, timings, figure material."""

    scale: int
    per_image: dict[str, dict[str, dict[str, float]]]  # method -> image -> metric -> value
    seconds: dict[str, list[float]]  # method -> seconds per image
    crop_heap: _CropHeap
    montage: dict[str, list[int]]  # volume -> item indices of its montage
    montage_srs: dict[int, dict[str, Tensor]]  # item index -> method -> sr


def evaluate(
    items: Iterable[Any],
    methods: Mapping[str, Method],
    conv: Conventions,
    out_dir: str | Path,
    options: EvalOptions | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluate ``methods`` on ``items``; write metrics.json, report.md and figures to ``out_dir``.

    items: :class:`EvalItem` or mappings with ``name``, ``hr`` (1, C, H, W) and ``lr``
        (under ``lr_key``), optionally ``volume`` and ``slice_index``.
    methods: name -> method; the FIRST is the reference of the paired comparisons.
    options: an :class:`EvalOptions`; any of its fields may also be given as a keyword
        argument (``evaluate(..., scale=4, lpips=False)``), which overrides ``options``. An
        unknown keyword is a TypeError.

    Returns the metrics.json content (non-finite numbers as None).
    """
    opts = _options(options, kwargs)
    items = _check_items(items, methods, opts)
    method_names = list(methods)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(opts.device)
    suite = MetricSuite(conv, lpips=opts.lpips, ms_ssim=opts.ms_ssim)
    run = _Runner(device, opts.seed)
    runs = _run_methods(items, methods, suite, run, conv, out_dir, opts)
    metric_names = suite.names
    statistics = _statistics(items, method_names, metric_names, runs, opts)
    sweep_results = _sweep(items, metric_names, suite, run, runs.scale, opts, opts.steps_sweep)
    results = _assemble_results(methods, conv, suite, runs, statistics, sweep_results, device, len(items), opts)
    results["detail_sweep"] = _sweep(items, metric_names, suite, run, runs.scale, opts, opts.detail_sweep)

    figure_files: dict[str, str] = {}
    if opts.figures:
        figure_files = _write_figures(
            out_dir,
            results,
            items,
            methods=method_names,
            highlight=opts.highlight,
            crop_heap=runs.crop_heap,
            montage=runs.montage,
            montage_srs=runs.montage_srs,
            conv=conv,
            scale=runs.scale,
            lr_key=opts.lr_key,
            hr_key=opts.hr_key,
        )
    results["figures"] = figure_files
    atomic_write_text(out_dir / "metrics.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
    report.write_report_md(out_dir / "report.md", results, figures=figure_files, reproduce=opts.reproduce)
    return results


def _check_items(items: Iterable[Any], methods: Mapping[str, Method], opts: EvalOptions) -> list[Any]:
    """The items as a list, each with a unique name, an HR and an LR image; at least one method."""
    items = list(items)
    if not items:
        raise DataError("evaluate: no test images")
    if not methods:
        raise DiffsrError("evaluate: no methods given")
    hr_key, lr_key = opts.hr_key, opts.lr_key
    names_seen: set[str] = set()
    for i, item in enumerate(items):
        name = _get(item, "name")
        if name is None or _get(item, hr_key) is None or _get(item, lr_key) is None:
            raise DataError(f"item {i}: needs 'name', '{hr_key}' and '{lr_key}'")
        if str(name) in names_seen:
            raise DataError(f"item {i}: duplicate image name '{name}'")
        names_seen.add(str(name))
    return items


def _run_methods(
    items: list[Any],
    methods: Mapping[str, Method],
    suite: MetricSuite,
    run: _Runner,
    conv: Conventions,
    out_dir: Path,
    opts: EvalOptions,
) -> _Runs:
    """Every method on every item, in order: metrics, timings, and the SR images the figures need."""
    method_names = list(methods)
    scale = opts.scale
    per_image: dict[str, dict[str, dict[str, float]]] = {m: {} for m in method_names}
    seconds: dict[str, list[float]] = {m: [] for m in method_names}
    crop_heap: _CropHeap = []
    montage = _montage_selection(items, max_volumes=2, per_volume=6) if opts.figures else {}
    montage_index = {i for idx in montage.values() for i in idx}
    montage_srs: dict[int, dict[str, Tensor]] = {}

    for index, item in enumerate(items):
        name = str(_get(item, "name"))
        hr, lr = _get(item, opts.hr_key).detach().cpu(), _get(item, opts.lr_key).detach().cpu()
        item_scale = _scale_of(hr, lr, name)
        if scale is None:
            scale = item_scale
        elif item_scale != scale:
            raise DataError(f"{name}: scale {item_scale}, expected {scale}")
        srs: dict[str, Tensor] = {}
        for method_name, fn in methods.items():
            sr, dt = run(method_name, fn, lr, scale, hr, index, name, _get(item, "measurement"))
            srs[method_name] = sr
            seconds[method_name].append(dt)
            values = suite(sr, hr)
            per_image[method_name][name] = {k: float(v[0]) for k, v in values.items()}
            if opts.save_outputs:
                _save_png(out_dir / "outputs" / _safe(method_name) / f"{_safe(name)}.png", sr, conv)
        log.info("%s: %s", name, ", ".join(f"{m} {per_image[m][name]['psnr']:.2f} dB" for m in method_names))
        if opts.figures and opts.n_crops > 0:
            _keep_crop(crop_heap, srs, hr, index, opts.n_crops)
        if index in montage_index:
            montage_srs[index] = srs
    assert scale is not None  # items is not empty
    return _Runs(scale, per_image, seconds, crop_heap, montage, montage_srs)


def _keep_crop(crop_heap: _CropHeap, srs: dict[str, Tensor], hr: Tensor, index: int, n_crops: int) -> None:
    """Keep the ``n_crops`` items where the methods differ most (ties: the earlier item)."""
    h, w = hr.shape[-2:]
    _, _, score = report.choose_crop(srs, hr, report.crop_size_for(h, w))
    entry = (score, -index, srs)
    if len(crop_heap) < n_crops:
        heapq.heappush(crop_heap, entry)
    elif entry[:2] > crop_heap[0][:2]:
        heapq.heapreplace(crop_heap, entry)


def _statistics(
    items: list[Any], method_names: list[str], metric_names: list[str], runs: _Runs, opts: EvalOptions
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per method and metric: the summary (mean, std, bootstrap CI), the paired difference with
    the first method on the same images, and the timing."""
    image_names = [str(_get(item, "name")) for item in items]
    reference = method_names[0]
    n_boot, seed = opts.n_boot, opts.seed

    def column(method: str, metric: str) -> np.ndarray:
        return np.array([runs.per_image[method][img][metric] for img in image_names], dtype=np.float64)

    summary = {
        m: {k: summarize(column(m, k), n_boot=n_boot, seed=seed) for k in metric_names} for m in method_names
    }
    paired = {
        m: {
            k: paired_difference(column(m, k), column(reference, k), n_boot=n_boot, seed=seed)
            for k in metric_names
        }
        for m in method_names[1:]
    }
    timing = {
        m: {
            "seconds_per_image_median": float(np.median(s)),
            "seconds_per_image_mean": float(np.mean(s)),
            "seconds_total": float(np.sum(s)),
            "n_images": len(s),
        }
        for m, s in runs.seconds.items()
    }
    return summary, paired, timing


def _sweep(
    items: list[Any], metric_names: list[str], suite: MetricSuite, run: _Runner, scale: int, opts: EvalOptions,
    sweep: Mapping[str, Mapping[Any, Method]] | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> str(swept value: steps or detail) -> metric -> summary, over every item."""
    sweep_results: dict[str, dict[str, dict[str, Any]]] = {}
    for method_name, by_steps in (sweep or {}).items():
        sweep_results[method_name] = {}
        for steps, fn in sorted(by_steps.items()):
            values: dict[str, list[float]] = {k: [] for k in metric_names}
            for index, item in enumerate(items):
                hr, lr = _get(item, opts.hr_key).detach().cpu(), _get(item, opts.lr_key).detach().cpu()
                sr, _ = run(f"{method_name}@{steps}", fn, lr, scale, hr, index, str(_get(item, "name")),
                            _get(item, "measurement"))
                for k, v in suite(sr, hr).items():
                    values[k].append(float(v[0]))
            sweep_results[method_name][str(steps)] = {
                k: summarize(v, n_boot=opts.n_boot, seed=opts.seed) for k, v in values.items()
            }
    return sweep_results


def _notes(
    suite: MetricSuite, method_names: list[str], runs: _Runs, device: torch.device, opts: EvalOptions
) -> list[str]:
    """The report's notes: metric conventions, inputs, what the comparisons and timings mean."""
    notes = list(suite.notes)
    if opts.inputs:
        notes.append("inputs: " + ", ".join(f"{k} {v}" for k, v in opts.inputs.items()))
    notes.append(f"paired differences are method - {method_names[0]} on the same images")
    notes.append(
        "timing: wall-clock seconds per image including the first call (report the median); "
        f"LR placed on {device}"
    )
    per_image = runs.per_image
    if any(not math.isfinite(v) for m in method_names for img in per_image[m].values() for v in img.values()):
        notes.append(
            "some per-image values are not finite (e.g. PSNR of an exact copy): written as null "
            "and left out of the statistics"
        )
    return notes


def _assemble_results(
    methods: Mapping[str, Method],
    conv: Conventions,
    suite: MetricSuite,
    runs: _Runs,
    statistics: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    sweep_results: dict[str, dict[str, dict[str, Any]]],
    device: torch.device,
    n_images: int,
    opts: EvalOptions,
) -> dict[str, Any]:
    """The metrics.json content, figures aside (non-finite numbers as None)."""
    method_names = list(methods)
    metric_names = suite.names
    summary, paired, timing = statistics
    results: dict[str, Any] = {
        "title": opts.title or "diffsr evaluation",
        "conventions": conv.to_dict(),
        "methods": method_names,
        "reference": method_names[0],
        "metric_info": {k: METRIC_INFO[k] for k in metric_names},
        "per_image": runs.per_image,
        "summary": summary,
        "paired": paired,
        "timing": timing,
        # facts a method callable may carry (see diffsr.sampling.infer.method_from_spec): parameters, steps
        "models": {name: {k: getattr(methods[name], k, None) for k in ("params", "sampling_steps")}
                   for name in method_names},
        "device": str(device),
        "steps_sweep": sweep_results,
        "meta": {
            "scale": runs.scale,
            "images": n_images,
            "bootstrap_resamples": opts.n_boot,
            "seed": opts.seed,
            "torch": torch.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        },
        "inputs": dict(opts.inputs or {}),
        "reproduce": opts.reproduce,
        "notes": _notes(suite, method_names, runs, device, opts),
    }
    return _json_safe(results)


def _write_figures(
    out_dir: Path,
    results: dict[str, Any],
    items: list[Any],
    *,
    methods: list[str],
    highlight: str | None,
    crop_heap: list[tuple[float, int, dict[str, Tensor]]],
    montage: dict[str, list[int]],
    montage_srs: dict[int, dict[str, Tensor]],
    conv: Conventions,
    scale: int,
    lr_key: str,
    hr_key: str,
) -> dict[str, str]:
    files: dict[str, str] = {}
    summary = results["summary"]
    report.plot_metric_bars(summary, methods, out_dir / "metrics.png")
    files["Mean metrics with 95 % CI"] = "metrics.png"

    if results["steps_sweep"]:
        baselines = {m: summary[m]["psnr"]["mean"] for m in methods if m not in results["steps_sweep"]}
        report.plot_steps_sweep(results["steps_sweep"], out_dir / "psnr_vs_steps.png", baselines=baselines)
        files["PSNR vs sampling steps (95 % CI band)"] = "psnr_vs_steps.png"
    if results.get("detail_sweep"):
        report.plot_perception_distortion(summary, results["detail_sweep"], out_dir / "perception_distortion.png")
        files["Perception-distortion plane: PSNR against sharpness (and LPIPS), detail 0 -> 1"] = \
            "perception_distortion.png"

    if highlight is None:
        candidates = methods[1:] or methods

        def mean_psnr(m: str) -> float:
            value = summary[m]["psnr"]["mean"]
            return float("-inf") if value is None else value

        highlight = max(candidates, key=mean_psnr)
    per_image = results["per_image"]
    for rank, (_, neg_index, srs) in enumerate(sorted(crop_heap, reverse=True)):
        item = items[-neg_index]
        name = str(_get(item, "name"))
        labels = {m: f"{_fmt_db(per_image[m][name].get('psnr'))}" for m in srs}
        file = f"crops_{rank}_{_safe(name)}.png"
        report.plot_crops(
            _get(item, hr_key),
            _get(item, lr_key),
            srs,
            out_dir / file,
            scale=scale,
            data_range=conv.data_range,
            highlight=highlight,
            labels=labels,
            title=name,
        )
        files[f"Zoomed crops where the methods differ most: {name}"] = file

    for vol, idx in montage.items():
        hr_slices = [_get(items[i], hr_key) for i in idx]
        sr_slices = {m: [montage_srs[i][m] for i in idx] for m in methods}
        slice_ids = [_get(items[i], "slice_index", _get(items[i], "name")) for i in idx]
        file = f"montage_{_safe(vol)}.png"
        report.plot_volume_montage(
            hr_slices,
            sr_slices,
            out_dir / file,
            slice_indices=slice_ids,
            data_range=conv.data_range,
            title=f"volume {vol}",
        )
        files[f"Slice montage: {vol}"] = file
    return files


def _fmt_db(v: float | None) -> str:
    return "PSNR n/a" if v is None else f"{v:.2f} dB"
