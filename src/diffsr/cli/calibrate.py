"""``diffsr calibrate``: fit calibrated intervals for a run on held-out images, write calibration.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffsr.core.atomic import check_output_folder
from diffsr.core.errors import DiffsrError
from diffsr.core.hub import is_hub_id

__all__ = ["calibration_folder", "run_calibrate"]


def calibration_folder(ckpt: Path) -> Path:
    """Where a run's calibration lives: the run (or model) folder, also for a checkpoint folder inside it."""
    ckpt = Path(ckpt)
    if ckpt.is_dir() and ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent
    return ckpt


def run_calibrate(
    *,
    ckpt: Path | str,
    data: Path,
    scale: int,
    samples: int,
    alpha: float = 0.1,
    delta: float | None = None,
    interval: str = "std",
    mask_threshold: float | None = None,
    steps: int | None = None,
    limit: int | None = None,
    degradation: str = "bicubic",
    seed: int = 0,
    crop: int | None = None,
    channels: int = 1,
    crop_border: int | None = None,
    progress: Any = None,
) -> str:
    """Draw ``samples`` samples per calibration image, fit lam-hat (and the constant band), write
    ``calibration.json`` into the run folder; returns a summary. Every argument is checked first."""
    from diffsr.data.eval_items import load_eval_items
    from diffsr.sampling.calibration import fit_calibration, image_intervals, min_images, sampling_options
    from diffsr.sampling.infer import load_model

    if not 0 < alpha < 1:
        raise DiffsrError(f"--alpha: must be in (0, 1), got {alpha}")
    if delta is not None and not 0 < delta < 1:
        raise DiffsrError(f"--delta: must be in (0, 1), got {delta}")
    if samples < 2:
        raise DiffsrError(f"--samples: intervals need at least 2 samples per image, got {samples}")
    if interval not in ("std", "quantile"):
        raise DiffsrError(f"--interval: '{interval}' is not one of std, quantile")
    if channels not in (1, 3):
        raise DiffsrError(f"--channels: {channels} is not 1 (grey / Y) or 3 (RGB)")
    for value, option in ((steps, "--steps"), (limit, "--limit")):
        if value is not None and value < 1:
            raise DiffsrError(f"{option}: must be >= 1, got {value}")
    if is_hub_id(str(ckpt)):
        raise DiffsrError(f"{ckpt}: calibrate writes calibration.json beside the model, not into the Hugging Face "
                          f"cache: make a local copy with `diffsr export {ckpt} --out DIR` and calibrate DIR")
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise DiffsrError(f"{ckpt}: no such run or checkpoint folder")
    if not Path(data).exists():
        raise DiffsrError(f"{data}: no such file or folder")
    check_output_folder(calibration_folder(ckpt), "--ckpt")  # calibration.json goes there
    loaded = load_model(ckpt, device="cpu")
    if loaded.model.is_baseline:
        raise DiffsrError(f"{ckpt}: a feed-forward baseline draws no samples; calibrate a diffusion run")
    if loaded.scale != scale:
        raise DiffsrError(f"{ckpt}: the model was trained for x{loaded.scale}, --scale asks for x{scale}")
    items = load_eval_items(data, scale, channels, max_slices=limit, degradation=degradation, seed=seed, crop=crop)
    if limit is not None:
        items = items[:limit]
    need = min_images(alpha, delta)
    if len(items) < need:
        how = (f"RCPS at alpha {alpha:g}, delta {delta:g}" if delta is not None
               else f"conformal risk control at alpha {alpha:g}")
        raise DiffsrError(f"{data}: {how} needs at least {need} calibration images, found {len(items)}")
    border = scale if crop_border is None else crop_border
    images = []
    for i, item in enumerate(items):
        images.append(image_intervals(loaded, item, samples=samples, steps=steps, kind=interval,  # type: ignore[arg-type]
                                      alpha=alpha, border=border, mask_threshold=mask_threshold))
        if progress is not None:
            progress(item.name, i + 1, len(items))
    calibration = fit_calibration(
        images, alpha=alpha, delta=delta, kind=interval, sampling=sampling_options(loaded, samples, steps),  # type: ignore[arg-type]
        data={"path": str(Path(data).resolve()), "images": len(items), "degradation": degradation, "seed": seed,
              "crop": crop, "crop_border": border, "checkpoint": str(loaded.checkpoint)},
        mask_threshold=mask_threshold,
    )
    target = calibration.write(calibration_folder(ckpt))
    guarantee = (f"expected miscoverage <= {alpha:g}" if delta is None
                 else f"expected miscoverage <= {alpha:g} with probability >= {1 - delta:g}")
    return (f"lam-hat {calibration.lam:.4g} ({calibration.method}, {guarantee}) from {len(items)} images x "
            f"{samples} samples; calibration risk {calibration.empirical_risk:.4f}; constant band half-width "
            f"{calibration.constant_width:.4g}; written to {target}")
