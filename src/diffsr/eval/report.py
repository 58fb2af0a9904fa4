"""Figures and the Markdown report of an evaluation.

Figures use matplotlib's object API (``Figure`` + Agg canvas), so no global backend is set
and nothing needs a display. Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffsr.core.atomic import atomic_path, atomic_write_text
from diffsr.eval.metrics import METRIC_INFO

METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "ms_ssim": "MS-SSIM",
    "lpips": "LPIPS",
    "nrmse": "NRMSE",
    "nmse": "NMSE",
    "hfen": "HFEN",
    "sharpness": "sharpness (SR/HR)",
}


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _finite(x: float | None) -> float:
    return float("nan") if x is None else float(x)


# ----------------------------------------------------------------------------- bars and lines


def plot_metric_bars(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    methods: Sequence[str],
    path: str | Path,
    *,
    metrics: Sequence[str] | None = None,
) -> Path:
    """One panel per metric: each method's mean with its 95 % bootstrap CI as error bar."""
    path = Path(path)
    if metrics is None:
        metrics = [m for m in METRIC_INFO if any(m in summary.get(name, {}) for name in methods)]
    fig = _figure(max(3.0, 2.2 + 0.45 * len(methods)) * len(metrics) / 1.6 + 1, 3.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    x = np.arange(len(methods))
    colors = [f"C{i % 10}" for i in range(len(methods))]
    for ax, metric in zip(axes, metrics, strict=True):
        means, lo_err, hi_err = [], [], []
        for name in methods:
            s = summary.get(name, {}).get(metric)
            mean = _finite(s["mean"]) if s else float("nan")
            lo, hi = (_finite(s["ci95"][0]), _finite(s["ci95"][1])) if s else (float("nan"),) * 2
            means.append(mean)
            lo_err.append(max(mean - lo, 0.0) if math.isfinite(lo) else 0.0)
            hi_err.append(max(hi - mean, 0.0) if math.isfinite(hi) else 0.0)
        ax.bar(x, np.nan_to_num(means), yerr=[lo_err, hi_err], color=colors, capsize=4)
        ax.set_xticks(x, list(methods), rotation=30, ha="right", fontsize=8)
        better = METRIC_INFO.get(metric, {}).get("better", "")
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)}\n({better} is better)", fontsize=9)
        finite = [m for m in means if math.isfinite(m)]
        if metric == "psnr" and finite:
            # PSNR bars from 0 hide differences of tenths of a dB
            low = min(m - e for m, e in zip(means, lo_err, strict=True) if math.isfinite(m))
            high = max(m + e for m, e in zip(means, hi_err, strict=True) if math.isfinite(m))
            pad = max(0.5, 0.15 * (high - low))
            ax.set_ylim(low - pad, high + pad)
        if metric == "sharpness":
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
    fig.suptitle("mean over images, 95 % bootstrap CI", fontsize=9)
    return _save(fig, path)


def plot_steps_sweep(
    sweep: Mapping[str, Mapping[Any, Mapping[str, Mapping[str, Any]]]],
    path: str | Path,
    *,
    metric: str = "psnr",
    baselines: Mapping[str, float] | None = None,
) -> Path:
    """``metric`` (mean and 95 % CI band) against the number of sampling steps, one line per method.

    ``baselines``: horizontal reference lines (e.g. bicubic's mean PSNR).
    """
    path = Path(path)
    fig = _figure(5.0, 3.4)
    ax = fig.subplots()
    for i, (name, by_steps) in enumerate(sweep.items()):
        steps = sorted(by_steps, key=int)
        stats = [by_steps[s].get(metric) for s in steps]
        mean = np.array([_finite(s["mean"]) if s else np.nan for s in stats])
        lo = np.array([_finite(s["ci95"][0]) if s else np.nan for s in stats])
        hi = np.array([_finite(s["ci95"][1]) if s else np.nan for s in stats])
        xs = np.array([int(s) for s in steps])
        ax.plot(xs, mean, marker="o", color=f"C{i % 10}", label=name)
        ax.fill_between(xs, lo, hi, color=f"C{i % 10}", alpha=0.2)
    for j, (name, value) in enumerate((baselines or {}).items()):
        if value is not None and math.isfinite(value):
            ax.axhline(value, color=f"C{(j + len(sweep)) % 10}", ls="--", lw=1, label=name)
    all_steps = sorted({int(s) for by_steps in sweep.values() for s in by_steps})
    if len(all_steps) > 1 and all_steps[0] > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(all_steps, [str(s) for s in all_steps])
    ax.minorticks_off()
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_perception_distortion(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    detail_sweep: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]],
    path: str | Path,
) -> Path:
    """PSNR (distortion) against sharpness and, when measured, LPIPS (perception).

    Every evaluated method is a point; every swept run is a line through its detail values
    (labelled), from the faithful end (detail 0) to the realistic one (detail 1).
    """
    path = Path(path)
    has_lpips = any("lpips" in s for s in summary.values())
    axes_for = ["sharpness", "lpips"] if has_lpips else ["sharpness"]
    fig = _figure(4.6 * len(axes_for), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(axes_for)))
    for ax, x_metric in zip(axes, axes_for, strict=True):
        for i, (name, s) in enumerate(summary.items()):
            x, y = s.get(x_metric, {}).get("mean"), s.get("psnr", {}).get("mean")
            if x is not None and y is not None:
                ax.plot([x], [y], "o", color=f"C{i % 10}", label=name)
        for j, (name, by_detail) in enumerate(detail_sweep.items()):
            keys = sorted(by_detail, key=float)
            xs = [_finite(by_detail[k].get(x_metric, {}).get("mean")) for k in keys]
            ys = [_finite(by_detail[k].get("psnr", {}).get("mean")) for k in keys]
            ax.plot(xs, ys, "-", marker=".", color=f"C{(j + len(summary)) % 10}", label=f"{name} (detail)")
            for k, x, y in zip(keys, xs, ys, strict=True):
                ax.annotate(f"{float(k):g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if x_metric == "sharpness":
            ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel(METRIC_LABELS.get(x_metric, x_metric) + (" (1 = as sharp as HR)" if x_metric == "sharpness"
                                                               else " (lower = closer)"))
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("perception-distortion plane (means over images)", fontsize=9)
    return _save(fig, path)


# ----------------------------------------------------------------------------- image panels


def _gray(x: Tensor) -> Tensor:
    """(1, C, H, W) -> (H, W) float64 mean over channels."""
    return x[0].double().mean(dim=0)


def choose_crop(srs: Mapping[str, Tensor], hr: Tensor, size: int) -> tuple[int, int, float]:
    """Top-left corner ``(y, x)`` of the ``size`` window where the methods differ most.

    The per-pixel spread is max - min over the methods' outputs (channel mean); with a
    single method it is that method's absolute error. Returns ``(y, x, mean spread)``.
    """
    stack = torch.stack([_gray(sr) for sr in srs.values()])
    spread = (stack[0] - _gray(hr)).abs() if stack.shape[0] == 1 else stack.amax(0) - stack.amin(0)
    h, w = spread.shape
    size = min(size, h, w)
    # every window's mean from an integral image (O(HW), not O(HW size^2) as a stride-1 average
    # pool: 7 s per 640 x 512 image); the pool itself then decides among the windows within
    # rounding of the best, so the choice and the score are exactly the pool's
    integral = F.pad(spread.cumsum(0).cumsum(1), (1, 0, 1, 0))
    means = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
             + integral[:-size, :-size]) / (size * size)
    tol = 1e-9 * float(spread.abs().max()) + 1e-300
    candidates = (means >= means.max() - tol).nonzero().tolist()
    if len(candidates) > 64:  # a flat spread: many near-ties, pool everything (rare)
        pooled = F.avg_pool2d(spread[None, None], size, stride=1)[0, 0]
        y, x = divmod(int(torch.argmax(pooled)), pooled.shape[1])
        return y, x, float(pooled[y, x])
    best: tuple[int, int, float] | None = None
    for y, x in candidates:  # row-major, as argmax's first maximum
        value = float(F.avg_pool2d(spread[None, None, y : y + size, x : x + size], size)[0, 0, 0, 0])
        if best is None or value > best[2]:
            best = (y, x, value)
    assert best is not None
    return best


def crop_size_for(h: int, w: int) -> int:
    """Default zoom window: a quarter of the short side, 8 to 128 pixels."""
    return min(h, w, max(8, min(128, min(h, w) // 4)))


def _show(ax: Any, img: Tensor, data_range: float, title: str) -> None:
    arr = img[0].detach().double().cpu().clamp(0, data_range).numpy() / data_range
    if arr.shape[0] == 3:
        ax.imshow(np.transpose(arr, (1, 2, 0)), interpolation="nearest")
    else:
        ax.imshow(arr.mean(axis=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_crops(
    hr: Tensor,
    lr: Tensor,
    srs: Mapping[str, Tensor],
    path: str | Path,
    *,
    scale: int,
    data_range: float = 1.0,
    highlight: str | None = None,
    crop_size: int | None = None,
    labels: Mapping[str, str] | None = None,
    title: str = "",
) -> Path:
    """Zoomed crops side by side: HR overview | LR (nearest) | methods... | HR | |error| of ``highlight``.

    The crop is chosen by :func:`choose_crop`. ``labels``: extra text per method (e.g. its PSNR).
    """
    path = Path(path)
    h, w = hr.shape[-2:]
    size = crop_size or crop_size_for(h, w)
    y, x, _ = choose_crop(srs, hr, size)
    size = min(size, h, w)

    def crop(t: Tensor) -> Tensor:
        return t[..., y : y + size, x : x + size]

    lr_up = F.interpolate(lr.double().cpu(), size=(h, w), mode="nearest")
    highlight = highlight if highlight in srs else list(srs)[-1]
    n = len(srs) + 4
    fig = _figure(1.9 * n, 2.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    _show(axes[0], hr, data_range, "HR (crop boxed)")
    from matplotlib.patches import Rectangle

    axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, ec="red", lw=1.2))
    _show(axes[1], crop(lr_up), data_range, f"LR x{scale} (nearest)")
    for ax, (name, sr) in zip(axes[2:], srs.items(), strict=False):
        extra = f"\n{labels[name]}" if labels and name in labels else ""
        _show(ax, crop(sr), data_range, f"{name}{extra}")
    _show(axes[n - 2], crop(hr), data_range, "HR")
    err = (crop(srs[highlight]).double().cpu() - crop(hr).double().cpu()).abs()[0].mean(dim=0).numpy()
    im = axes[n - 1].imshow(err, cmap="magma", vmin=0, interpolation="nearest")
    axes[n - 1].set_title(f"|{highlight} - HR|", fontsize=8)
    axes[n - 1].set_xticks([])
    axes[n - 1].set_yticks([])
    fig.colorbar(im, ax=axes[n - 1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_volume_montage(
    hr_slices: Sequence[Tensor],
    sr_slices: Mapping[str, Sequence[Tensor]],
    path: str | Path,
    *,
    slice_indices: Sequence[Any],
    data_range: float = 1.0,
    title: str = "",
) -> Path:
    """Rows HR, methods...; columns the chosen slices of one volume."""
    path = Path(path)
    rows = [("HR", list(hr_slices)), *[(name, list(s)) for name, s in sr_slices.items()]]
    n_cols = len(hr_slices)
    fig = _figure(1.8 * n_cols + 0.6, 1.8 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c, img in enumerate(images):
            _show(axes[r, c], img, data_range, f"slice {slice_indices[c]}" if r == 0 else "")
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


# ----------------------------------------------------------------------------- Markdown


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}f}"
    return str(v)


def _cell(text: str) -> str:
    """Escape a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _digits(metric: str) -> int:
    return 2 if metric == "psnr" else 5 if metric == "nmse" else 4


def write_report_md(
    path: str | Path,
    results: Mapping[str, Any],
    *,
    figures: Mapping[str, str] | None = None,
    reproduce: str | None = None,
) -> Path:
    """Write the Markdown report of an :func:`~diffsr.eval.evaluate.evaluate` result.

    ``figures``: caption -> file name relative to the report. ``reproduce``: the command that
    regenerates the table (defaults to ``results["reproduce"]``).
    """
    path = Path(path)
    methods: list[str] = list(results["methods"])
    summary = results["summary"]
    metrics = [m for m in METRIC_INFO if any(m in summary.get(name, {}) for name in methods)]
    reference = results.get("reference", methods[0])
    lines = [
        *_head_section(results, reproduce or results.get("reproduce")),
        *_conventions_section(results["conventions"]),
        *_results_section(summary, methods, metrics),
        *_paired_section(results.get("paired", {}), metrics, reference),
        *_timing_section(results),
        *_sweep_section(results.get("steps_sweep") or {}, metrics),
        *_sweep_section(results.get("detail_sweep") or {}, metrics, title="Detail (faithful 0 .. realistic 1)",
                        column="detail"),
        *_figures_section(figures),
        *_notes_section(results.get("notes", [])),
    ]
    atomic_write_text(path, "\n".join(lines))
    return path


def _head_section(results: Mapping[str, Any], reproduce: str | None) -> list[str]:
    """Title, the meta line and the reproduce command."""
    lines = [f"# {results.get('title') or 'diffsr evaluation'}", ""]
    meta = results.get("meta", {})
    if meta:
        lines += [", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    if reproduce:
        lines += ["Reproduce:", "", "```", reproduce, "```", ""]
    return lines


def _conventions_section(conventions: Mapping[str, Any]) -> list[str]:
    lines = ["## Conventions", "", "| setting | value |", "|---|---|"]
    for key, value in conventions.items():
        lines.append(f"| {key} | {_cell('n/a' if value is None else str(value))} |")
    lines.append("")
    return lines


def _results_section(summary: Mapping[str, Any], methods: list[str], metrics: list[str]) -> list[str]:
    """Mean ± std [CI] per method and metric."""
    lines = [
        "## Results",
        "",
        "Mean ± std over images, [95 % percentile-bootstrap CI of the mean, 2000 resamples].",
        "",
    ]
    header = ["method", *[f"{METRIC_LABELS.get(m, m)} ({METRIC_INFO[m]['better']})" for m in metrics]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in methods:
        cells = [name]
        for m in metrics:
            s = summary.get(name, {}).get(m)
            if not s:
                cells.append("n/a")
                continue
            d = _digits(m)
            lo, hi = s["ci95"]
            cells.append(f"{_fmt(s['mean'], d)} ± {_fmt(s['std'], d)} [{_fmt(lo, d)}, {_fmt(hi, d)}]")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    return lines


def _paired_section(paired: Mapping[str, Any], metrics: list[str], reference: str) -> list[str]:
    """Mean per-image difference with the reference [CI] (wins/losses); nothing without pairs."""
    if not paired:
        return []
    lines = [
        f"## Paired differences vs {reference}",
        "",
        "Mean of per-image (method - reference), [95 % bootstrap CI], images where the "
        "difference is > 0 / < 0. A CI excluding 0 is marked *.",
        "",
    ]
    header = ["method", *[METRIC_LABELS.get(m, m) for m in metrics]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, by_metric in paired.items():
        cells = [name]
        for m in metrics:
            p = by_metric.get(m)
            if not p:
                cells.append("n/a")
                continue
            d = _digits(m)
            lo, hi = p["ci95"]
            star = "*" if lo is not None and hi is not None and (lo > 0 or hi < 0) else ""
            cells.append(
                f"{_fmt(p['mean_diff'], d)}{star} [{_fmt(lo, d)}, {_fmt(hi, d)}] "
                f"({p.get('wins', '?')}/{p.get('losses', '?')})"
            )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    return lines


def _timing_section(results: Mapping[str, Any]) -> list[str]:
    """Parameters, sampling steps and seconds per image of each method; nothing without timings."""
    timing = results.get("timing", {})
    if not timing:
        return []
    lines = [
        f"## Timing ({results.get('device', 'cpu')})",
        "",
        "| method | parameters | sampling steps | median s/image | mean s/image | total s | images |",
        "|---|---|---|---|---|---|---|",
    ]
    models = results.get("models", {})
    for name, t in timing.items():
        info = models.get(name) or {}
        params = "n/a" if info.get("params") is None else f"{info['params']:,}"
        steps = "n/a" if info.get("sampling_steps") is None else str(info["sampling_steps"])
        lines.append(
            f"| {_cell(name)} | {params} | {steps} | {_fmt(t['seconds_per_image_median'])} "
            f"| {_fmt(t['seconds_per_image_mean'])} | {_fmt(t['seconds_total'], 2)} | {t['n_images']} |"
        )
    lines.append("")
    return lines


def _sweep_section(sweep: Mapping[str, Any], metrics: list[str], *, title: str = "Sampling steps",
                   column: str = "steps") -> list[str]:
    """Mean [CI] per method, swept value (sampling steps, detail) and metric; nothing without a sweep."""
    if not sweep:
        return []
    labels = " | ".join(METRIC_LABELS.get(m, m) for m in metrics)
    lines = [
        f"## {title}",
        "",
        f"| method | {column} | {labels} |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for name, by_steps in sweep.items():
        for steps in sorted(by_steps, key=float):
            cells = [name, str(steps)]
            for m in metrics:
                s = by_steps[steps].get(m)
                d = _digits(m)
                cells.append(
                    f"{_fmt(s['mean'], d)} [{_fmt(s['ci95'][0], d)}, {_fmt(s['ci95'][1], d)}]"
                    if s
                    else "n/a"
                )
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    return lines


def _figures_section(figures: Mapping[str, str] | None) -> list[str]:
    if not figures:
        return []
    lines = ["## Figures", ""]
    for caption, name in figures.items():
        lines += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    return lines


def _notes_section(notes: Sequence[str]) -> list[str]:
    if not notes:
        return []
    return ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
