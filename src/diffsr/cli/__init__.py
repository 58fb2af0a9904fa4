"""The ``diffsr`` command line.

User errors (missing files, bad configs, wrong scales) print one line ``error: ...`` and exit
with code 2; they never show a traceback and never leave half-written outputs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from diffsr.core.errors import DiffsrError

app = typer.Typer(
    name="diffsr",
    help="Diffusion and flow super-resolution for medical, infrared and natural images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value, e.g. --set train.steps=200 (repeatable)."),
]
NormalizationOpt = Annotated[str | None, typer.Option(
    help="Intensity mapping to [0, 1]: auto | dtype | minmax | percentile | window (sr: default the model's "
         "data.normalization; inverted exactly on output and recorded in <output>.json).")]
PercentilesOpt = Annotated[str | None, typer.Option(help="LOW,HIGH for --normalization percentile.")]
WindowOpt = Annotated[str | None, typer.Option(
    help="LOW,HIGH in file units for --normalization window (default: a DICOM's own window).")]
VolumeOpt = Annotated[int | None, typer.Option(help="The volume of a 4-D NIfTI (required for one).")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo_out"),
    steps: Annotated[int | None, typer.Option(help="Training steps (default: the demo preset's).")] = None,
    time_limit: Annotated[float | None, typer.Option(help="Training time budget in seconds.")] = None,
    sample_steps: Annotated[int | None, typer.Option(help="Sampling steps.")] = None,
    baseline: Annotated[str | None, typer.Option(
        help="Also train this feed-forward preset (edsr) with the same budget and compare.")] = None,
) -> None:
    """Train a tiny model on the built-in infrared/MRI samples (CPU), then compare it with bicubic."""
    from diffsr.cli.demo import run_demo
    from diffsr.cli.options import at_least
    from diffsr.core.atomic import check_output_folder

    at_least(steps, 1, "--steps")
    at_least(sample_steps, 1, "--sample-steps")
    check_output_folder(out)
    result = run_demo(out, steps=steps, time_limit=time_limit, sample_steps=sample_steps, console=console,
                      baseline=baseline)
    console.print(
        f"diffsr {result['mean']['diffsr']['psnr']:.2f} dB vs bicubic {result['mean']['bicubic']['psnr']:.2f} dB "
        f"(mean PSNR on {result['n_images']} held-out images, gain {result['gain_db']:+.2f} dB)"
    )
    if result.get("baseline"):
        b = result["baseline"]["preset"]
        console.print(f"{b} {result['mean'][b]['psnr']:.2f} dB, SSIM {result['mean'][b]['ssim']:.4f} vs diffsr SSIM "
                      f"{result['mean']['diffsr']['ssim']:.4f} (same budget; see report.md)")
    console.print(f"outputs in {out}/: metrics.json, report.md, comparison.png, run/ (checkpoint)")


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="A preset name (see 'diffsr presets') or a YAML file.")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<preset>).")] = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(
        help="Continue from the newest checkpoint in --out (none there: a warning, then from scratch); "
             "--resume=must makes a missing checkpoint an error.")] = False,
    resume_must: Annotated[bool, typer.Option("--resume-must", hidden=True)] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    cpu: Annotated[bool, typer.Option(help="Force CPU even when CUDA is available.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a model on CPU, one GPU, or several processes (accelerate launch / torchrun)."""
    _setup_logging(verbose)
    from diffsr.config import load_config
    from diffsr.core.atomic import check_output_folder
    from diffsr.train.trainer import Trainer

    cfg = load_config(config, set_)
    run_dir = out or Path("runs") / cfg.name
    check_output_folder(run_dir)
    if not resume and _has_checkpoints(run_dir):
        raise DiffsrError(f"{run_dir}: already holds checkpoints; pass --resume or choose another --out")
    if resume_must and not _has_checkpoints(run_dir):  # before any work (the trainer checks it too)
        raise DiffsrError(f"{run_dir}: --resume=must, but the run holds no complete checkpoint")
    mode: bool | str = "must" if resume_must else resume
    result = Trainer(cfg, run_dir, resume=mode, progress=progress, cpu=cpu or None).fit()
    if result.checkpoint is None:  # not the main process of a multi-process run: it wrote nothing
        return
    console.print(
        f"trained {result.step} steps in {result.seconds:.0f} s ({result.steps_per_second:.2f} it/s); "
        f"checkpoint: {result.checkpoint}"
    )


def _has_checkpoints(run_dir: Path) -> bool:
    from diffsr.train.checkpoint import list_checkpoints

    return bool(list_checkpoints(run_dir))


@app.command()
def sr(
    inputs: Annotated[list[Path], typer.Argument(help="Images, folders, DICOM series folders or NIfTI volumes.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    ckpt: Annotated[str | None, typer.Option(
        help="Run, checkpoint or model folder, or hf://ORG/NAME[@REV] (Hugging Face cache).")] = None,
    onnx: Annotated[Path | None, typer.Option(
        help="An exported one-step graph (diffsr export --onnx), run with onnxruntime, instead of --ckpt.")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps.")] = None,
    ema: Annotated[bool, typer.Option(help="Use the EMA weights.")] = True,
    tile: Annotated[int | None, typer.Option(help="HR tile size (bounded memory).")] = None,
    overlap: Annotated[int | None, typer.Option(help="Tile overlap in HR pixels (blend mode).")] = None,
    tile_mode: Annotated[
        str | None, typer.Option(help="auto | exact (tiled == whole image, slower) | blend (fast, approximate).")
    ] = None,
    samples: Annotated[int, typer.Option(help="Draw N samples: write their mean and a std map (with a "
                                             "calibration: also calibrated _lo / _hi interval images).")] = 1,
    consistency: Annotated[
        str | None, typer.Option(help="Data consistency: none | backprojection | kspace.")
    ] = None,
    detail: Annotated[float | None, typer.Option(
        help="0 = faithful (one-step estimate) .. 1 = realistic (a full-chain sample).")] = None,
    normalization: NormalizationOpt = None,
    percentiles: PercentilesOpt = None,
    window: WindowOpt = None,
    volume_index: VolumeOpt = None,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first input that fails (default: report it, "
                                                 "go on, exit 2 at the end).")] = False,
    cpu: Annotated[bool, typer.Option(help="Force CPU.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Super-resolve files with a trained model; outputs keep format, bit depth, units and metadata."""
    _setup_logging(verbose)
    from diffsr.cli import options as opt
    from diffsr.core.atomic import check_output_folder
    from diffsr.sampling.infer import load_model, sr_files

    for value, minimum, option in ((samples, 1, "--samples"), (steps, 1, "--steps"), (tile, opt.MIN_TILE, "--tile"),
                                   (overlap, 0, "--overlap"), (volume_index, 0, "--volume-index")):
        opt.at_least(value, minimum, option)
    norm = opt.normalization(normalization, percentiles, window)
    for p in inputs:
        if not p.exists():
            raise DiffsrError(f"{p}: no such file or folder")
    check_output_folder(out)
    if (ckpt is None) == (onnx is None):
        raise DiffsrError("sr: give one of --ckpt (a model) or --onnx (an exported graph)")
    failed: list[Path] = []
    file_options = {"normalization": norm[0], "percentiles": norm[1], "window": norm[2],
                    "volume_index": volume_index, "on_error": _report_input_error(failed, fail_fast)}
    if onnx is not None:
        from diffsr.cli.export import run_sr_onnx

        refused = {"--consistency": consistency, "--detail": detail}
        _print_paths(run_sr_onnx(inputs, onnx, out, steps=steps, tile=tile, overlap=overlap, tile_mode=tile_mode,
                                 samples=samples, refused=refused, file_options=file_options), failed)
        return
    assert ckpt is not None
    loaded = load_model(ckpt, ema=ema, device="cpu" if cpu else None)
    options = _sample_options(consistency, tile_mode, detail)
    if options:  # validated like a config override (one-line errors), not assigned field by field
        from diffsr.sampling.infer import with_sample_options

        loaded.config.sample = with_sample_options(loaded.config.sample, options, "sr")
    calibration = _calibration_for(ckpt, loaded, samples, steps)
    from rich.progress import Progress

    # a progress bar only on a terminal: piped stderr stays clean (an error is then its one line)
    with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("sr", total=None)

        def report(name: str, i: int, n: int) -> None:
            bar.update(task, description=f"{name} {i}/{n}", completed=i, total=n)

        written = sr_files(loaded, inputs, out, steps=steps, tile=tile, overlap=overlap, samples=samples,
                           progress=report, calibration=calibration, **file_options)
    _print_paths(written, failed)


def _sample_options(consistency: str | None, tile_mode: str | None, detail: float | None) -> dict[str, Any]:
    """sr's sampling options that were given, each checked (one-line errors)."""
    if consistency is not None and consistency not in ("none", "backprojection", "kspace"):
        raise DiffsrError(f"--consistency: '{consistency}' is not one of none, backprojection, kspace")
    if tile_mode is not None and tile_mode not in ("auto", "exact", "blend"):
        raise DiffsrError(f"--tile-mode: '{tile_mode}' is not one of auto, exact, blend")
    if detail is not None and not 0 <= detail <= 1:
        raise DiffsrError(f"--detail: must be in [0, 1], got {detail}")
    return {k: v for k, v in (("consistency", consistency), ("tile_mode", tile_mode), ("detail", detail))
            if v is not None}


def _print_paths(written: list[Path], failed: list[Path]) -> None:
    """Print sr's outputs verbatim (a name with [brackets] is not markup, a long path is not wrapped);
    exit 2 when an input failed."""
    for p in written:
        console.print(str(p), markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def _report_input_error(failed: list[Path], fail_fast: bool) -> Callable[[Path, DiffsrError], None]:
    """sr_files' on_error: one ``error:`` line per bad input, then the next (or stop, with --fail-fast)."""

    def report(path: Path, err: DiffsrError) -> None:
        if fail_fast:
            raise err
        failed.append(path)
        text = str(err) if str(path) in str(err) else f"{path}: {err}"
        err_console.print(f"[red]error:[/] {escape(text)}", soft_wrap=True)

    return report


@app.command()
def iso(
    volume: Annotated[Path, typer.Argument(help="A thick-slice NIfTI volume or DICOM series folder.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    preset: Annotated[str, typer.Option(help="The preset trained on the scan's own slices (demo, edsr).")] = "demo",
    factor: Annotated[str, typer.Option(
        help="auto (isotropic: the in-plane spacing) or the factor the slice spacing is divided by.")] = "auto",
    spacing: Annotated[float | None, typer.Option(help="Output slice spacing in mm (instead of --factor).")] = None,
    profile: Annotated[str, typer.Option(
        help="gaussian (FWHM = thickness) | rect | a file of samples at the in-plane spacing.")] = "gaussian",
    gap: Annotated[float | None, typer.Option(
        help="Gap between slices in mm (thickness = spacing - gap; default: DICOM SliceThickness, else 0).")] = None,
    time_limit: Annotated[float, typer.Option(help="Training time budget in seconds.")] = 300.0,
    train_steps: Annotated[int | None, typer.Option(help="Training steps at most (default: the preset's).")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps.")] = None,
    samples: Annotated[int, typer.Option(help="Draw N samples: write their mean and a per-voxel std volume.")] = 1,
    consistency: Annotated[bool, typer.Option(
        help="Keep the output consistent with the measured slices (re-degraded, it reproduces them).")] = True,
    combine: Annotated[str, typer.Option(help="average | fourier: how the two orientations are combined.")] = "average",
    batch: Annotated[int, typer.Option(help="Planes per model call (bounds memory).")] = 8,
    volume_index: Annotated[int | None, typer.Option(help="The volume of a 4-D NIfTI.")] = None,
    model: Annotated[Path | None, typer.Option(help="Reuse a run trained by diffsr iso (skips training).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="nifti | dicom (default: the input's).")] = None,
    normalization: Annotated[str, typer.Option(
        help="minmax (nothing saturates) | percentile (0.5-99.5 of the non-zero voxels, clipped).")] = "minmax",
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
    set_: SetOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Isotropic volume from a thick-slice scan: self-supervised through-plane SR (docs/volumes.md)."""
    _setup_logging(verbose)
    from diffsr.cli.iso import run_iso_cli

    console.print(run_iso_cli(
        volume, out, console=console, err_console=err_console, preset=preset, factor=factor, spacing=spacing,
        profile=profile, gap=gap, time_limit=time_limit, train_steps=train_steps, steps=steps, samples=samples,
        consistency=consistency, combine=combine, batch=batch, volume_index=volume_index, model=model, fmt=fmt,
        normalization=normalization, seed=seed, overrides=list(set_ or []),
    ))


def _calibration_for(ckpt: str, loaded: object, samples: int, steps: int | None) -> object:
    """The run's calibration when ``--samples N`` (N > 1) will use it; refused when fitted for other sampling."""
    if samples < 2:
        return None
    from diffsr.cli.calibrate import calibration_folder
    from diffsr.sampling.calibration import find_calibration, sampling_options

    # the folder the model was read from (a hub id's snapshot, a run's checkpoint, a model folder)
    calibration = find_calibration(calibration_folder(loaded.checkpoint))  # type: ignore[attr-defined]
    if calibration is not None:
        calibration.check_sampling(sampling_options(loaded, samples, steps), where=f"{ckpt}/calibration.json")
    return calibration


@app.command()
def calibrate(
    ckpt: Annotated[str, typer.Option(help="The diffusion run, checkpoint or model folder (calibration.json "
                                           "is written there).")],
    data: Annotated[Path, typer.Option(help="Held-out HR calibration images (not the test images).")],
    scale: Annotated[int, typer.Option(help="SR factor.")] = 4,
    samples: Annotated[int, typer.Option(help="Samples per image (N >= 2); diffsr sr must use the same N.")] = 8,
    alpha: Annotated[float, typer.Option(help="Target risk: the expected fraction of pixels outside.")] = 0.1,
    delta: Annotated[float | None, typer.Option(
        help="RCPS: the risk bound holds with probability 1 - delta (needs more images).")] = None,
    interval: Annotated[str, typer.Option(help="std | quantile (the samples' spread the intervals scale).")] = "std",
    mask_threshold: Annotated[float | None, typer.Option(
        help="Count only pixels whose HR is above this ([0, 1] units), e.g. 0.05 for the head in MRI.")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps of each sample.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most N images / slices.")] = None,
    degradation: Annotated[str, typer.Option(help="How LR is made from each HR.")] = "bicubic",
    seed: Annotated[int, typer.Option(help="Seed of the degradation.")] = 0,
    crop: Annotated[int | None, typer.Option(help="Centre crop of each image.")] = None,
    channels: Annotated[int, typer.Option(help="1 (grey / Y) or 3.")] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit calibrated per-pixel intervals (conformal risk control, or RCPS with --delta); writes calibration.json."""
    _setup_logging(verbose)
    from diffsr.cli.calibrate import run_calibrate

    console.print(run_calibrate(ckpt=ckpt, data=data, scale=scale, samples=samples, alpha=alpha, delta=delta,
                                interval=interval, mask_threshold=mask_threshold, steps=steps, limit=limit,
                                degradation=degradation, seed=seed, crop=crop, channels=channels))


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Option(help="HR images folder, an image, or a volume (NIfTI/DICOM).")],
    method: Annotated[list[str], typer.Option(help="bicubic | CKPT | edsr:CKPT | rcan:CKPT | swinir:CKPT (repeat).")],
    out: Annotated[Path, typer.Option(help="Output folder for metrics.json, report.md, figures.")],
    scale: Annotated[int, typer.Option(help="SR factor.")] = 4,
    steps: Annotated[list[int] | None, typer.Option(help="Sampling steps (repeat for a sweep).")] = None,
    channels: Annotated[int, typer.Option(help="Evaluate as 1 (grey/Y) or 3 channels.")] = 1,
    limit: Annotated[int | None, typer.Option(help="At most N images / slices.")] = None,
    crop_border: Annotated[int | None, typer.Option(help="Border crop (default: = scale).")] = None,
    lpips_weights: Annotated[str | None, typer.Option(help="LPIPS lin weights (.pth).")] = None,
    samples: Annotated[int, typer.Option(help="N > 1: also check the calibration of N-sample std maps.")] = 1,
    degradation: Annotated[str, typer.Option(help="bicubic|blur_noise|infrared|kspace|realesrgan")] = "bicubic",
    lr_dir: Annotated[Path | None, typer.Option(help="Real LR images (same names), not a degradation.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the degradation's random draws (per image).")] = 0,
    crop: Annotated[int | None, typer.Option(help="Evaluate the centre crop x crop of each image.")] = None,
    bicubic: Annotated[str, typer.Option(
        help="torch (PyTorch a = -0.75) | matlab (imresize a = -0.5, as published tables) for LR and bicubic.")
    ] = "torch",
    detail_sweep: Annotated[str, typer.Option(
        help="Detail values each diffusion run is also evaluated at (perception-distortion plane); 'none' to skip.")
    ] = "0,0.5,1",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Metric convention, e.g. --set eval.quantize=true (repeatable)."),
    ] = None,
    normalization: NormalizationOpt = None,
    percentiles: PercentilesOpt = None,
    window: WindowOpt = None,
    volume_index: VolumeOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Evaluate several methods on the same images with pinned metric conventions."""
    _setup_logging(verbose)
    from diffsr.cli import options as opt
    from diffsr.cli.evaluate import run_eval

    summary = run_eval(
        data=data, methods=method, out=out, scale=scale, steps=steps, channels=channels, limit=limit,
        crop_border=crop_border, lpips_weights=lpips_weights, samples=samples, degradation=degradation,
        lr_dir=lr_dir, seed=seed, crop=crop, eval_set=set_, console=console, bicubic=bicubic,
        detail_sweep=_floats(detail_sweep, "--detail-sweep"),
        normalization=opt.normalization(normalization, percentiles, window), volume_index=volume_index,
    )
    console.print(summary)


def _floats(text: str, option: str) -> list[float]:
    """'0,0.5,1' -> [0.0, 0.5, 1.0]; 'none' or '' -> []; anything else is a one-line error."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise DiffsrError(f"{option}: '{text}' is not a comma-separated list of numbers (or 'none')") from None


@app.command()
def distill(
    teacher: Annotated[str, typer.Option(help="The trained multi-step run: a folder, or hf://ORG/NAME[@REV].")],
    out: Annotated[Path, typer.Option(help="Run folder for the one-step student.")],
    steps: Annotated[int, typer.Option(help="Fine-tuning steps.")] = 500,
    target: Annotated[str, typer.Option(help="hr (reconstruction) | teacher (regress the teacher's output).")] = "hr",
    teacher_steps: Annotated[int | None, typer.Option(help="Teacher sampling steps (target=teacher).")] = None,
    loss: Annotated[str, typer.Option(help="l1 | l2 | charbonnier")] = "l1",
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the teacher's).")] = None,
    time_limit: Annotated[float | None, typer.Option(help="Seconds.")] = None,
    set_: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    cpu: Annotated[bool, typer.Option(help="Force CPU.")] = False,
) -> None:
    """Fine-tune a trained multi-step model into a one-step generator (use it with --steps 1)."""
    from diffsr.cli.options import at_least
    from diffsr.core.atomic import check_output_folder
    from diffsr.train.distill import run_distill_cli

    at_least(steps, 1, "--steps")
    at_least(teacher_steps, 1, "--teacher-steps")
    check_output_folder(out)
    console.print(run_distill_cli(teacher, out, steps, target=target, teacher_steps=teacher_steps, loss=loss, lr=lr,
                                  time_limit=time_limit, set_=set_, progress=progress, cpu=cpu))


@app.command("export")
def export_cmd(
    run: Annotated[str, typer.Argument(help="Run, checkpoint or model folder, or hf://ORG/NAME[@REV].")],
    out: Annotated[Path, typer.Option(help="The model folder to write (model.safetensors, config.yaml, "
                                           "README.md card, calibration.json).")],
    dtype: Annotated[str, typer.Option(help="Weights' dtype: fp32 | bf16 | fp16.")] = "fp32",
    onnx: Annotated[bool, typer.Option("--onnx", help="Also write model.onnx (one-step models only).")] = False,
    license: Annotated[str, typer.Option(help="The card's licence (a Hub licence id, e.g. apache-2.0).")] = "other",
    tag: Annotated[list[str] | None, typer.Option(help="Extra card tags, e.g. mri, infrared (repeat).")] = None,
    eval_: Annotated[Path | None, typer.Option("--eval", help="A diffsr eval output (folder or metrics.json) "
                                                              "for the card; default: the newest in the run.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing, non-empty --out.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 17,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Write a model folder to share or push to the Hub (and an ONNX graph with --onnx)."""
    _setup_logging(verbose)
    from diffsr.cli.export import run_export

    console.print(run_export(run, out, dtype=dtype, onnx=onnx, license=license, tags=tag, evaluation=eval_,
                             overwrite=overwrite, opset=opset), soft_wrap=True)


weights_app = typer.Typer(help="Perceptual-loss weights (LPIPS): pre-fetch into the torch hub cache, list.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("fetch")
def weights_fetch(
    names: Annotated[list[str], typer.Argument(help="lpips-alex | lpips-vgg (repeat).")],
) -> None:
    """Download weights into the torch hub cache ($TORCH_HOME/hub/checkpoints) for machines without network."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from diffsr.cli.weights import run_fetch

    console.print(run_fetch(names), soft_wrap=True)


@weights_app.command("list")
def weights_list() -> None:
    """Show where each weight set resolves now (nothing is downloaded)."""
    from diffsr.cli.weights import run_list

    console.print(run_list(), soft_wrap=True)


@app.command()
def bench(
    config: Annotated[list[str] | None, typer.Option(help="Presets / YAML files to benchmark (repeat).")] = None,
    baseline: Annotated[list[str] | None, typer.Option(help="edsr | rcan | swinir (repeat).")] = None,
    size: Annotated[int, typer.Option(help="HR image side in pixels.")] = 256,
    steps: Annotated[list[int] | None, typer.Option(help="Sampling steps (repeat).")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    repeat: Annotated[int, typer.Option(help="Timed repetitions (median).")] = 3,
    out: Annotated[Path | None, typer.Option(help="Write JSON here.")] = None,
) -> None:
    """Parameters, FLOPs, latency and peak memory of presets and baselines, side by side."""
    from diffsr.cli.evaluate import run_bench

    console.print(run_bench(configs=config or ["demo"], baselines=baseline or [], size=size, steps=steps,
                            device=device, repeat=repeat, out=out))


@app.command()
def audit(
    config: Annotated[str, typer.Argument(help="A preset name or a YAML file.")],
    set_: SetOpt = None,
) -> None:
    """Check a config before training: decoders, gates, schedules, gradient reachability."""
    from diffsr.cli.audit import run_audit

    # the audit reports a term that never switches on as its error: not also as a warning
    logging.getLogger("diffsr.losses.build").setLevel(logging.ERROR)

    console.print(run_audit(config, set_ or []))


@app.command()
def presets() -> None:
    """List the shipped presets."""
    import yaml

    from diffsr.config import preset_names, preset_text

    for name in preset_names():
        desc = (yaml.safe_load(preset_text(name)) or {}).get("description", "")
        console.print(f"[bold]{name:<24}[/] {escape(desc.splitlines()[0] if desc else '')}", soft_wrap=True)


@app.command("config")
def config_cmd(
    name: Annotated[str, typer.Argument(help="A preset name or a YAML file.")],
    set_: SetOpt = None,
) -> None:
    """Print a preset's full, validated YAML (every default filled in)."""
    from diffsr.config import load_config

    sys.stdout.write(load_config(name, set_).to_yaml())


#: file readers that log their own complaints about a malformed file, which diffsr turns into
#: its one-line error; their messages show with --verbose
_READER_LOGGERS = ("tifffile", "nibabel", "pydicom", "PIL")


def _click_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...],
                               tuple[type[BaseException], ...]]:
    """(usage/click errors, Exit, Abort) from click and from typer's vendored copy (typer >= 0.26
    raises ``typer._click`` exceptions, which are not ``click`` classes); whichever exist."""
    errors: list[type[BaseException]] = []
    exits: list[type[BaseException]] = [typer.Exit]
    aborts: list[type[BaseException]] = [typer.Abort]
    for module in ("click", "typer._click"):
        try:
            mod = __import__(f"{module}.exceptions", fromlist=["exceptions"])
        except ImportError:
            continue
        for name, bucket in (("ClickException", errors), ("Exit", exits), ("Abort", aborts)):
            cls = getattr(mod, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                bucket.append(cls)
    return tuple(errors), tuple(exits), tuple(aborts)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors -> one line and exit code 2."""
    click_errors, click_exits, click_aborts = _click_classes()
    args = sys.argv[1:] if argv is None else argv
    # --resume=must (typer has no options with an optional value): the hidden flag --resume-must
    args = [a for arg in args for a in (("--resume", "--resume-must") if arg == "--resume=must" else (arg,))]
    if not {"-v", "--verbose"} & set(args):
        for name in _READER_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        code = app(args=args, prog_name="diffsr", standalone_mode=False)
    except DiffsrError as err:
        err_console.print(f"[red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise SystemExit(2) from None
    except click_exits as exc:
        raise SystemExit(getattr(exc, "exit_code", 0)) from None
    except click_errors as exc:
        # usage errors (missing option, bad value, unknown option): one line, exit 2; a bare
        # invocation has already printed the help and has nothing to add
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        if message:
            err_console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
        raise SystemExit(2) from None
    except click_aborts:
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise SystemExit(130) from None
    if isinstance(code, int) and code:  # typer.Exit(code) is returned, not raised, outside standalone mode
        raise SystemExit(code)


if __name__ == "__main__":
    main()
