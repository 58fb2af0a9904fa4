"""``diffsr iso`` end to end: read, plan, train on the scan's own slices, reconstruct, write.

Everything that can be wrong with the input (the volume, the spacing, the factor, the profile
file, the model) is checked before anything is written. Outputs in ``out``:

- ``<name>_iso.nii.gz`` (NIfTI input) or the folder ``<name>_iso`` (a new DICOM series);
- ``<name>_iso_std.*`` with ``samples > 1``: the per-voxel std of one draw, in file units;
- ``iso.json``: the plan, the training run, timings, the consistency residual;
- ``run/``: the model trained on this scan (``--model`` reuses it for another run).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffsr.core.atomic import atomic_write_text
from diffsr.core.errors import DiffsrError
from diffsr.volumes.plan import IsoPlan, plan_iso
from diffsr.volumes.reconstruct import COMBINE, Progress, reconstruct
from diffsr.volumes.volume import Volume, read_volume, write_volume

log = logging.getLogger(__name__)

__all__ = ["NORMALIZATIONS", "IsoOptions", "check_model", "output_name", "run_iso"]

#: intensity mappings to [0, 1]: minmax (the default: nothing saturates, the output keeps every
#: intensity of the input's range) or percentile (0.5 / 99.5 of the non-zero voxels, clipped)
NORMALIZATIONS = ("minmax", "percentile")


@dataclass
class IsoOptions:
    """The options of one ``diffsr iso`` run (the CLI's, with the same defaults)."""

    preset: str = "demo"
    factor: float | str = "auto"
    spacing: float | None = None
    gap: float | None = None
    profile: str = "gaussian"
    time_limit: float | None = 300.0
    train_steps: int | None = None
    steps: int | None = None
    samples: int = 1
    consistency: bool = True
    combine: str = "average"
    batch: int = 8
    volume_index: int | None = None
    model: Path | None = None
    seed: int = 0
    fmt: str | None = None
    normalization: str = "minmax"
    overrides: list[str] = field(default_factory=list)


def output_name(volume: Volume, fmt: str, suffix: str = "iso") -> str:
    """``<name>_iso.nii.gz`` or ``<name>_iso`` (a DICOM series folder)."""
    return f"{volume.record.name}_{suffix}" + (".nii.gz" if fmt == "nifti" else "")


def _check_options(opts: IsoOptions, volume: Volume) -> str:
    """The output format; DiffsrError for options that cannot work."""
    if opts.samples < 1:
        raise DiffsrError("--samples: must be >= 1")
    if opts.batch < 1:
        raise DiffsrError("--batch: must be >= 1")
    if opts.combine not in COMBINE:
        raise DiffsrError(f"--combine: '{opts.combine}' is not one of {', '.join(COMBINE)}")
    if opts.time_limit is not None and opts.time_limit <= 0:
        raise DiffsrError("--time-limit: must be > 0 seconds")
    if opts.normalization not in NORMALIZATIONS:
        raise DiffsrError(f"--normalization: '{opts.normalization}' is not one of {', '.join(NORMALIZATIONS)}")
    fmt = opts.fmt or volume.format
    if fmt not in ("nifti", "dicom"):
        raise DiffsrError(f"--format: '{fmt}' is not one of nifti, dicom")
    if fmt == "dicom" and volume.format != "dicom":
        raise DiffsrError("--format dicom: needs a DICOM series input (its headers are copied)")
    return fmt


def check_model(loaded: Any, plan: IsoPlan, where: str) -> None:
    """A loaded run must be a one-axis model for this plan's factor and thickness (1 % tolerance)."""
    deg = loaded.config.data.degradation
    if getattr(deg, "name", None) != "slice_profile":
        raise DiffsrError(f"{where}: not a through-plane model (its degradation is '{deg.name}', not slice_profile)")
    want = (plan.factor, plan.thickness / plan.fine)
    have = (float(deg.factor), float(deg.thickness if deg.thickness is not None else deg.factor))
    if any(abs(h - w) > 0.01 * w for h, w in zip(have, want, strict=True)):
        raise DiffsrError(f"{where}: trained for factor {have[0]:.3g} and thickness {have[1]:.3g} pixels; this volume "
                          f"needs {want[0]:.3g} and {want[1]:.3g}")


def _prepare_out(out: Path, volume: Volume, fmt: str, train: bool) -> None:
    from diffsr.sampling.files import check_output_dir

    check_output_dir(out, [volume.path])
    if out.exists() and not out.is_dir():
        raise DiffsrError(f"{out}: exists and is not a folder")
    run = out / "run"
    if train and run.exists():
        from diffsr.train.checkpoint import list_checkpoints

        if list_checkpoints(run):
            raise DiffsrError(f"{run}: already holds a trained model; reuse it with --model {run} or choose "
                              f"another --out")
        shutil.rmtree(run)


def run_iso(path: str | Path, out: str | Path, options: IsoOptions | None = None, *,
            progress: Progress | None = None, say: Any = None) -> dict[str, Any]:
    """Run ``diffsr iso`` on one volume; returns the report written to ``out/iso.json``."""
    from diffsr.data.normalize import fit_intensity
    from diffsr.sampling.infer import load_model
    from diffsr.volumes.training import iso_config, train_iso, training_slices

    opts = options or IsoOptions()
    say = say or (lambda *a, **k: None)
    out = Path(out)
    volume = read_volume(path, volume_index=opts.volume_index)
    plan = plan_iso(volume, factor=opts.factor, spacing=opts.spacing, gap=opts.gap, profile=opts.profile)
    fmt = _check_options(opts, volume)
    loaded = load_model(opts.model) if opts.model is not None else None
    if loaded is not None:
        check_model(loaded, plan, str(opts.model))
    cfg = iso_config(opts.preset, plan, source=volume.path, time_limit=opts.time_limit,
                     train_steps=opts.train_steps, overrides=opts.overrides) if loaded is None else None
    _prepare_out(out, volume, fmt, train=loaded is None)
    say(plan.describe())
    record = volume.record
    intensity = fit_intensity(record, opts.normalization)
    unit = intensity.forward(volume.data).astype(np.float32)
    report: dict[str, Any] = {"input": str(volume.path), "shape": list(volume.shape), "plan": _plan_dict(plan),
                              "intensity": intensity.to_dict()}
    if loaded is None:
        assert cfg is not None
        slices = training_slices(unit, plan, min_foreground=cfg.data.min_foreground)
        say(f"training '{cfg.name}' on {len(slices)} in-plane slices ({cfg.train.time_limit or 'no'} s limit) ...")
        t0 = time.perf_counter()
        result = train_iso(cfg, slices, out / "run", progress=progress is not None)
        report["train"] = {"preset": cfg.name, "slices": len(slices), "steps": result.step,
                           "seconds": round(time.perf_counter() - t0, 1), "run": str(out / "run")}
        loaded = load_model(out / "run")
    else:
        report["train"] = {"model": str(opts.model), "preset": loaded.config.name}
    say("reconstructing both through-plane orientations ...")
    rec = reconstruct(loaded.model, unit, plan, steps=opts.steps or loaded.config.sample.steps,
                      samples=opts.samples, seed=opts.seed, consistency=opts.consistency, combine=opts.combine,
                      batch=opts.batch, detail=loaded.config.sample.detail, progress=progress)
    affine = plan.out_affine(volume.affine)
    written = [write_volume(out / output_name(volume, fmt), intensity.inverse(rec.mean), volume, affine, fmt=fmt)]
    if rec.std is not None:
        spread = rec.std * float(intensity.hi - intensity.lo)
        written.append(write_volume(out / output_name(volume, fmt, "iso_std"), spread, volume, affine, fmt=fmt,
                                    description="isotropic std (diffsr iso)"))
    report["reconstruct"] = {"seconds": round(rec.seconds, 1), "steps": opts.steps or loaded.config.sample.steps,
                             "samples": opts.samples, "consistency": opts.consistency, "combine": opts.combine,
                             "batch": opts.batch, "planes": rec.planes, "consistency_residual": rec.residual}
    report["output"] = {"files": [str(p) for p in written], "shape": list(rec.mean.shape),
                        "spacing": _out_spacing(plan), "affine": affine.tolist()}
    atomic_write_text(out / "iso.json", json.dumps(report, indent=2))
    return report


def _plan_dict(plan: IsoPlan) -> dict[str, Any]:
    return {"axis": plan.axis, "spacing": list(plan.spacing), "slice_spacing": plan.slice_spacing,
            "thickness": plan.thickness, "gap": plan.gap, "profile": plan.profile if isinstance(plan.profile, str)
            else list(plan.profile), "model_grid": plan.fine, "model_factor": plan.factor,
            "out_spacing": plan.out_spacing, "out_factor": plan.out_factor, "slices_in": plan.n_in,
            "slices_out": plan.n_out}


def _out_spacing(plan: IsoPlan) -> list[float]:
    sp = list(plan.spacing)
    sp[plan.axis] = plan.out_spacing
    return sp
