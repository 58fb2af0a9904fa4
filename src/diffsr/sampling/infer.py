"""Inference: load a checkpoint and super-resolve tensors, files, folders, DICOM series and volumes.

Outputs keep the input's format, bit depth and spatial metadata (spacing divided by the
scale); large images are processed in overlapping tiles blended smoothly, so memory is
bounded by the tile size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffsr.config import Config, load_saved_config, saved_config_mapping
from diffsr.core.errors import CheckpointError, DataError, DiffsrError
from diffsr.model import SRModel, build_model

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready for sampling, with the config it was trained with."""

    model: SRModel
    config: Config
    checkpoint: Path
    step: int
    ema: bool

    @property
    def scale(self) -> int:
        """The SR factor the model was trained for."""
        return self.config.data.scale


def load_model(ckpt: str | Path, *, ema: bool = True, device: str | torch.device | None = None) -> LoadedModel:
    """Load a model: a run folder, a checkpoint folder, a model folder (``diffsr export``) or
    ``hf://ORG/NAME[@REV]`` (fetched into the Hugging Face cache, see :mod:`diffsr.core.hub`).

    EMA weights by default when present (a model folder holds the weights it was exported with).
    """

    from diffsr.core.hub import resolve_model_source
    from diffsr.model import load_trainable_state
    from diffsr.train.checkpoint import read_checkpoint

    data = read_checkpoint(resolve_model_source(ckpt), ema=ema)
    raw = saved_config_mapping(data["config_yaml"], f"{data['path']}/config.yaml")
    model_folder = bool(data["meta"].get("model_folder"))
    config = load_saved_config(raw, f"{data['path']}/config.yaml", base=data["path"] if model_folder else None)
    model = build_model(config)
    weights = data["ema"] if (ema and data["ema"] is not None) else data["model"]
    try:
        load_trainable_state(model, weights)
    except CheckpointError as err:
        raise CheckpointError(f"{data['path']}: the weights do not match its config.yaml: {err}") from None
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    used_ema = data["meta"].get("weights") == "ema" if model_folder else data["ema"] is not None and ema
    return LoadedModel(model, config, data["path"], int(data["meta"].get("step", 0)), used_ema)


def _consistency_hook(loaded: LoadedModel, lr: Tensor, measurement: Tensor | None = None
                      ) -> Callable[..., Tensor] | None:
    """The sampler's x0 hook for ``sample.consistency`` / ``sample.guidance`` (None when both are off)."""
    from diffsr.sampling.consistency import consistency_active, make_x0_hook

    cfg = loaded.config.sample
    if not consistency_active(cfg):
        return None
    return make_x0_hook(loaded.model, lr, loaded.scale, cfg, loaded.config.data.degradation.name,
                        measurement=measurement)


def super_resolve(
    loaded: LoadedModel,
    lr: Tensor,
    *,
    steps: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    seed: int | None = None,
    measurement: Tensor | None = None,
) -> Tensor:
    """LR (B, C, h, w) in [0, 1] -> SR (B, C, h*s, w*s) in [0, 1].

    measurement: the raw measurement behind ``lr`` when data consistency should project onto
    it rather than onto the image (the complex k-space of a simulated MRI acquisition,
    :func:`~diffsr.data.degrade.kspace_measure`); None: ``lr`` itself.

    Channel counts that differ from the model's are handled explicitly: a 1-channel model
    processes each channel of an RGB image separately; a 3-channel model gets a grey image
    replicated and returns the channel mean.

    Tiling (``tile`` in HR pixels, when the image is larger), ``sample.tile_mode``:

    - ``auto`` (default): ``exact`` where the model and tile allow it, else ``blend`` with a
      warning that says why (a VAE codec, SwinIR, a tile smaller than the net's receptive field).
    - ``exact``: the sampler runs on the whole latent and each denoiser call is
      evaluated tile by tile with a receptive-field halo and whole-image GroupNorm / attention
      state (``nets.exact_tiling``), so the result equals the untiled one (to float rounding,
      ~1e-5) while activation memory stays that of one tile. Data consistency and every noise
      draw are those of the untiled run. A baseline (EDSR / RCAN) is tiled the same way on the
      LR grid. Slower: about (GroupNorm layers / 2) tile passes per denoiser call.
    - ``blend``: each overlapping tile (``overlap`` HR pixels) is sampled on its own from its
      slice of one starting-noise field and the tiles are blended with a raised-cosine window
      (ResShift's per-step noise is drawn per tile); a baseline is tiled on the LR grid. Fast, no
      seams, but a tile's limited context and GroupNorm statistics make it differ from the
      untiled result (measured up to ~2e-2). Data consistency is applied once to the stitched image.
    """
    model = loaded.model
    device = next(iter(model.parameters()), torch.empty(0)).device
    lr = lr.to(device=device, dtype=torch.float32)
    if lr.shape[1] != model.channels:
        return match_channels(
            lambda x: super_resolve(loaded, x, steps=steps, tile=tile, overlap=overlap, seed=seed), lr,
            model.channels, "input",
        )
    if measurement is not None:
        measurement = measurement.to(device)
    run = _Run.of(loaded, lr, steps=steps, tile=tile, overlap=overlap, seed=seed)
    with torch.no_grad():
        if model.is_baseline:
            sr = run.baseline(lr)
        elif run.blend:
            sr = run.blended(lr)
        else:  # whole image, or exact tiles: the untiled computation, consistency inside the sampler
            return model.sample(upsample_lr(lr, run.scale), steps=run.steps, generator=run.generator(),
                                x0_hook=_consistency_hook(loaded, lr, measurement), net=run.net, detail=run.detail)
        return _consistent(loaded, lr if measurement is None else measurement, sr, stitched=run.blend)


@dataclass
class _Run:
    """One super_resolve call's sampling options, resolved (steps, tiles, the tile-by-tile net)."""

    loaded: LoadedModel
    device: torch.device
    steps: int | None
    tile: int | None
    overlap: int
    seed: int
    net: Callable[..., Tensor] | None  # the denoiser evaluated in exact tiles (None: untiled / blend)
    blend: bool
    detail: float | None = None

    @classmethod
    def of(cls, loaded: LoadedModel, lr: Tensor, *, steps: int | None, tile: int | None, overlap: int | None,
           seed: int | None) -> _Run:
        cfg = loaded.config.sample
        tile = tile if tile is not None else cfg.tile
        b, _, h, w = lr.shape
        s = loaded.scale
        tiled = bool(tile) and (h * s > tile or w * s > tile)  # type: ignore[operator]
        overlap = cfg.overlap if overlap is None else overlap
        # exact tiling: the untiled computation with the net evaluated tile by tile (None: blend / untiled)
        net: Callable[..., Tensor] | None = None
        if tiled and cfg.tile_mode != "blend":
            from diffsr.nets.exact_tiling import ExactTilingError

            try:
                net = _exact_net(loaded, tile, batch=b)  # type: ignore[arg-type]
            except ExactTilingError as err:
                if cfg.tile_mode == "exact":
                    raise
                _check_blend_tile(loaded, tile, overlap, also=str(err))  # type: ignore[arg-type]
                log.warning("%s: blending independent tiles instead (sample.tile_mode auto); they differ from the "
                            "whole-image result (docs/data.md, section 5)", err)
        if tiled and net is None:
            _check_blend_tile(loaded, tile, overlap)  # type: ignore[arg-type]
        return cls(loaded, lr.device, steps or cfg.steps, tile, overlap, cfg.seed if seed is None else seed, net,
                   tiled and net is None, cfg.detail)

    @property
    def scale(self) -> int:
        return self.loaded.scale

    def generator(self, offset: int = 0) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed + offset)
        return gen

    def baseline(self, lr: Tensor) -> Tensor:
        """A feed-forward baseline: LR tile -> net -> SR tile, blended on the HR grid (tile / overlap
        are HR pixels, as for the diffusion models, divided by the scale on the LR grid)."""
        model, s = self.loaded.model, self.scale

        def run_baseline(x: Tensor) -> Tensor:
            return model.sample(upsample_like(x, s), lr=x, net=self.net)

        if not self.blend:
            return run_baseline(lr)
        from diffsr.data.tiling import tiled_apply

        return tiled_apply(run_baseline, lr, tile=max(1, self.tile // s), overlap=self.overlap // s,  # type: ignore[operator]
                           scale=s)

    def blended(self, lr: Tensor) -> Tensor:
        """Independent overlapping tiles, each sampled from its slice of one starting-noise field."""
        from diffsr.data.tiling import tiled_apply
        from diffsr.processes.common import randn

        model, s = self.loaded.model, self.scale
        b, _, h, w = lr.shape
        lr_up = upsample_lr(lr, s)
        # one starting-noise field for the whole (padded) latent, drawn exactly as the untiled
        # sampler draws it; each tile samples from its slice. Per-step noise (ResShift only)
        # cannot be sliced: each tile draws it from its own seed (seed + 1 + tile index).
        d = model.codec.downsample
        hp, wp = -(-h * s // d) * d, -(-w * s // d) * d
        noise = randn((b, model.codec.latent_channels(model.channels), hp // d, wp // d), device=self.device,
                      dtype=torch.float32, generator=self.generator())
        count = [0]

        def run_tile(x: Tensor, y0: int, x0: int) -> Tensor:
            th, tw = x.shape[-2:]
            tile_noise = noise[..., y0 // d : (y0 + th) // d, x0 // d : (x0 + tw) // d]
            count[0] += 1
            # a tile has no LR measurement of its own: tiles are sampled without the hook and
            # the stitched image is made consistent with the whole LR once (below)
            return model.sample(x, steps=self.steps, generator=self.generator(count[0]), noise=tile_noise,
                                detail=self.detail)

        return tiled_apply(run_tile, lr_up, tile=self.tile, overlap=self.overlap, multiple=d,  # type: ignore[arg-type]
                           with_origin=True)


def _check_blend_tile(loaded: LoadedModel, tile: int, overlap: int, also: str = "") -> None:
    """ConfigError naming --tile and its minimum when blend tiles of ``tile`` HR pixels cannot work
    (``also``: why exact tiles cannot either, added to the message)."""
    from diffsr.core.errors import ConfigError

    model = loaded.model
    unit = loaded.scale if model.is_baseline else model.codec.downsample  # tiles are multiples of it
    usable = (tile // loaded.scale) * loaded.scale if model.is_baseline else (tile // unit) * unit
    overlap_px = (overlap // loaded.scale) * loaded.scale if model.is_baseline else overlap
    if usable >= unit and 2 * overlap_px < usable:
        return
    minimum = (2 * overlap_px // unit + 1) * unit
    exact = f" (and for exact tiles: {also})" if also else ""
    raise ConfigError(f"--tile (sample.tile) {tile}: too small for blended tiles with overlap {overlap}: at least "
                      f"{minimum} HR pixels; raise --tile or lower --overlap{exact}")


def upsample_lr(lr: Tensor, scale: int) -> Tensor:
    """The condition ``lr_up`` every model samples from (bicubic, as in training)."""
    from diffsr.data.degrade import upsample

    return upsample(lr, scale)


def _consistent(loaded: LoadedModel, lr: Tensor, sr: Tensor, *, stitched: bool) -> Tensor:
    """Data consistency applied to a finished image (a baseline's output or stitched blend tiles);
    ``lr`` is the measurement (the LR image, or complex k-space)."""
    from diffsr.sampling.consistency import Consistency, consistency_active

    cfg = loaded.config.sample
    if not consistency_active(cfg):
        return sr
    fix = Consistency(lr, loaded.scale, cfg.consistency, iters=cfg.consistency_iters, guidance=cfg.guidance,
                      degradation=loaded.config.data.degradation.name)
    log.info("data consistency applied to the %s", "stitched image" if stitched else "baseline output")
    return fix(sr).clamp(0, 1)


def _exact_net(loaded: LoadedModel, tile: int, *, batch: int) -> Callable[..., Tensor]:
    """The model's net evaluated exactly tile by tile (``tile`` in HR pixels); ExactTilingError when it cannot be."""
    from diffsr.codecs import CODECS
    from diffsr.nets import NETS
    from diffsr.nets.exact_tiling import ExactTiler, ExactTilingError, TiledUNet

    model, cfg = loaded.model, loaded.config
    if not NETS.caps(cfg.net.name).exact_tiling:
        raise ExactTilingError(f"sample.tile_mode: net '{cfg.net.name}' cannot be tiled exactly (layers that see "
                               "the whole image); use sample.tile_mode=blend")
    if model.is_baseline:  # on the LR grid
        s = loaded.scale
        # the feed-forward net itself, not its [-1, 1] wrapper: the wrapper's constant offset is
        # nonzero everywhere, which the receptive-field probe would read as a global reach
        tiler = ExactTiler(model.net.net, lambda n, x: n(x), tile=max(1, tile // s), scale=s, unit=s,
                           cache=cfg.sample.tile_cache * 2**20)  # RCAN: one pass per channel attention
        tiler.prepare([(batch, model.channels)])
        return lambda x: tiler(x) * 2 - 1  # BaselineDenoiser.forward on the stitched output
    if not CODECS.caps(cfg.codec.name).exact_tiling:
        raise ExactTilingError(f"sample.tile_mode: exact tiling runs the codec on the whole image, which the "
                               f"'{cfg.codec.name}' codec cannot do in bounded memory; use sample.tile_mode=blend")
    d = model.codec.downsample
    net = TiledUNet(model.net, tile=max(1, tile // d), unit=d, cache=cfg.sample.tile_cache * 2**20)
    latent = model.codec.latent_channels(model.channels)
    net.prepare(batch, getattr(model.net, "in_channels", latent), getattr(model.net, "cond_channels", latent))
    return net


def upsample_like(lr: Tensor, scale: int) -> Tensor:
    """An (uninitialised) tensor of the SR size for ``lr``: baselines need only its shape."""
    return lr.new_empty(*lr.shape[:2], lr.shape[-2] * scale, lr.shape[-1] * scale)


def sr_files(
    loaded: LoadedModel,
    inputs: list[Path],
    out: Path,
    *,
    steps: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    samples: int = 1,
    normalization: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    calibration: Any = None,
    percentiles: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    volume_index: int | None = None,
    on_error: Callable[[Path, DiffsrError], None] | None = None,
    method: Callable[..., Tensor] | None = None,
) -> list[Path]:
    """Super-resolve image files, folders, DICOM series and NIfTI volumes into ``out``.

    method: ``method(lr, steps=, tile=, overlap=, seed=) -> sr`` in place of
    :func:`super_resolve` with ``loaded`` (an ONNX graph: :meth:`diffsr.export.OnnxModel.super_resolve`);
    ``loaded`` then needs only ``config`` and ``scale``.

    Each input keeps its format: PNG/TIFF with the input's bit depth and mode, NIfTI with the
    in-plane spacing divided by the scale, DICOM series with new UIDs; values are in the input's
    units (the intensity mapping is inverted exactly; ``<output>.json`` records it). With
    ``samples > 1`` the mean of N samples is written plus a per-pixel standard deviation map
    (``*_std``). With a :class:`~diffsr.sampling.calibration.Calibration` (fitted for these
    sampling options) the intervals ``[mean - lam lo, mean + lam up]`` are written as ``*_lo``
    and ``*_hi`` images in the output's format and units, and ``*_std`` holds the calibrated
    half-width ``lam (lo + up) / 2`` instead of the raw standard deviation.

    normalization: a policy (:mod:`diffsr.data.normalize`; default the model's
    ``data.normalization``), with ``percentiles`` / ``window`` (default the model's). A policy
    taken from the model that clearly does not fit an input (``dtype`` on 14-bit counts in a
    uint16) is refused for that input; one given explicitly is used with a warning. Anything
    ``percentile`` / ``window`` saturates is reported with its share of values.
    volume_index: the volume of a 4-D NIfTI (None: a 4-D file with several volumes is an error).

    Every output path is decided and checked before any compute (:func:`plan_outputs`: two
    inputs writing one output, an output overwriting an input). on_error: called with each input
    that fails (a user error: unreadable, too large for memory, ...) before going on to the next;
    None: the first failure is raised.
    """
    from diffsr.core.atomic import remove_stale_temporaries
    from diffsr.data.degrade import DEGRADATIONS
    from diffsr.data.io import list_inputs
    from diffsr.sampling.files import check_output_dir, plan_outputs

    degradation = loaded.config.data.degradation.name
    if DEGRADATIONS.caps(degradation).one_axis:
        raise DiffsrError(f"{getattr(loaded, 'checkpoint', 'the model')}: a through-plane model (degradation "
                          f"'{degradation}'): it needs the thick slices interpolated along one axis; use "
                          f"'diffsr iso VOLUME --model RUN'")
    files: list[Path] = []
    for p in inputs:
        files += list_inputs(Path(p))
    check_output_dir(out, [Path(p) for p in inputs])
    extras = ("std", "lo", "hi") if samples > 1 and calibration is not None else ("std",) if samples > 1 else ()
    plans = plan_outputs([Path(p) for p in inputs], files, out, extras=extras)
    remove_stale_temporaries(out)  # left by an earlier sr killed mid-write
    options = _FileOptions(steps, tile, overlap, samples, calibration, normalization, percentiles, window,
                           volume_index, method)
    written: list[Path] = []
    for plan in plans:
        try:
            written += _sr_file(loaded, plan, options, progress)
        except DiffsrError as err:
            if on_error is None or not isinstance(err, DataError):
                raise
            on_error(plan.source, err)
    return written


@dataclass
class _FileOptions:
    """The options of one sr_files call (see there)."""

    steps: int | None
    tile: int | None
    overlap: int | None
    samples: int
    calibration: Any
    normalization: str | None
    percentiles: tuple[float, float] | None
    window: tuple[float, float] | None
    volume_index: int | None
    method: Callable[..., Tensor] | None = None  # in place of super_resolve (an ONNX graph)


def _sr_file(loaded: LoadedModel, plan: Any, options: _FileOptions,
             progress: Callable[[str, int, int], None] | None) -> list[Path]:
    """Read, check, super-resolve and write one input (its plan); returns the image paths written."""
    from diffsr.data.io import read, write
    from diffsr.sampling.files import calibrated_interval, check_sr_memory, intensity_for, write_units_record

    path, data_cfg = plan.source, loaded.config.data
    record = read(path, volume_index=options.volume_index, slice_axis=data_cfg.slice_axis)
    n, c, h, w = record.array.shape
    if min(h, w) < 4:
        raise DataError(f"{path}: image {w}x{h} is too small to super-resolve")
    model = getattr(loaded, "model", None)  # None: an ONNX graph (run on the CPU)
    device = str(next(iter(model.parameters()), torch.empty(0)).device) if model is not None else "cpu"
    check_sr_memory(loaded, path, record.array.shape, samples=options.samples, tile=options.tile or
                    loaded.config.sample.tile, itemsize=np.dtype(record.meta.get("dtype", "float32")).itemsize,
                    device=device)
    intensity, source = intensity_for(loaded, record, options.normalization, options.percentiles,
                                      options.window)
    unit = intensity.forward(record.array)
    outs, stds, bounds = [], [], []
    run = options.method or (lambda x, **kw: super_resolve(loaded, x, **kw))
    for i in range(n):
        lr = torch.from_numpy(np.ascontiguousarray(unit[i : i + 1], dtype=np.float32))
        draws = [run(lr, steps=options.steps, tile=options.tile, overlap=options.overlap,
                     seed=loaded.config.sample.seed + k) for k in range(options.samples)]
        stack = torch.stack(draws)
        outs.append(stack.mean(0).cpu().numpy())
        if options.samples > 1 and options.calibration is not None:
            spread, lower, upper = calibrated_interval(stack, options.calibration)
            stds.append(spread)
            bounds.append((lower, upper))
        elif options.samples > 1:
            stds.append(stack.std(0, correction=1).cpu().numpy())
        del draws, stack
        if progress:
            progress(path.name, i + 1, n)
    del unit
    sr = outs[0] if n == 1 else np.concatenate(outs, 0)
    del outs
    written = {"sr": write(plan.sr, sr, like=record, intensity=intensity, scale=loaded.scale)}
    if stds:
        written["std"] = write_std(plan.extras["std"], np.concatenate(stds, 0), like=record, intensity=intensity,
                                   scale=loaded.scale)
    for k, suffix in enumerate(("lo", "hi")):
        if bounds:
            bound = np.concatenate([b[k] for b in bounds], 0)
            written[suffix] = write(plan.extras[suffix], bound, like=record, intensity=intensity, scale=loaded.scale)
    default_steps = model.process.default_steps if model is not None else 1  # an ONNX graph: one step
    sampling = {"steps": options.steps or loaded.config.sample.steps or default_steps,
                "samples": options.samples, "tile": options.tile or loaded.config.sample.tile,
                "seed": loaded.config.sample.seed}
    write_units_record(plan, record=record, intensity=intensity, policy_source=source, loaded=loaded,
                       options=sampling, written=written)
    return list(written.values())


def write_std(path: Path, std_unit: np.ndarray, *, like: Any, intensity: Any, scale: int) -> Path:
    """Write a per-pixel standard deviation map (N, C, H, W), in [0, 1] units, like the SR output.

    A standard deviation scales with the intensity mapping's ``hi - lo`` but has no offset, so
    the file holds ``std_unit * (hi - lo)`` in the input's units (grey levels for 8/16-bit
    PNG/TIFF, the volume's units for NIfTI/DICOM), rounded to the on-disk dtype like the SR image.
    """
    from diffsr.data.io import write
    from diffsr.data.normalize import Intensity

    spread = Intensity(policy=intensity.policy, lo=0.0, hi=float(intensity.hi - intensity.lo))
    return write(path, std_unit, like=like, intensity=spread, scale=scale)


def match_channels(fn: Callable[[Tensor], Tensor], lr: Tensor, channels: int, where: str) -> Tensor:
    """``fn`` (a model taking ``channels`` channels) applied to ``lr`` (B, C, h, w) of any C.

    A 1-channel model processes each channel separately; a C-channel model gets a grey image
    replicated and returns the channel mean; ``channels`` 0 (unknown) or equal to C: ``fn(lr)``.
    """
    b, c, h, w = lr.shape
    if not channels or c == channels:
        return fn(lr)
    if channels == 1:
        sr = fn(lr.reshape(b * c, 1, h, w))
        return sr.reshape(b, c, *sr.shape[-2:])
    if c == 1:
        return fn(lr.expand(b, channels, h, w)).mean(1, keepdim=True)
    raise DataError(f"{where}: the model takes {channels} channels, the images have {c}")


def _first_conv_channels(net: torch.nn.Module) -> int:
    """Input channels of a network's first convolution (0 when it has none)."""
    conv = next((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else 0


def method_from_spec(
    spec: str, scale: int, *, steps: int | None = None, device: str | None = None, bicubic: str = "torch"
) -> tuple[str, Callable[[Tensor, int], Tensor]]:
    """An evaluation method from a CLI spec: 'bicubic', 'CKPT', or '<baseline>:CKPT'.

    A run may end in ``@KEY=VALUE[,KEY=VALUE]`` with ``sample.*`` keys (consistency,
    consistency_iters, guidance, seed, tile, overlap), e.g. ``runs/mri@consistency=kspace``: the
    same checkpoint sampled another way, under its own display name, so one evaluation compares
    with and without data consistency. Returns (display name, fn(lr, scale) -> sr).
    """
    from diffsr.core.hub import is_hub_id
    from diffsr.data.degrade import upsample

    spec, options = _split_sample_options(spec)
    if options and (spec == "bicubic" or (":" in spec and not is_hub_id(spec)
                                          and not Path(spec.split(":", 1)[1]).is_dir())):
        raise DiffsrError(f"--method {spec}@...: sampling options apply to diffsr runs only")
    if options:
        name, fn = method_from_spec(spec, scale, steps=steps, device=device)
        loaded = fn.loaded  # type: ignore[attr-defined]
        loaded.config.sample = with_sample_options(loaded.config.sample, options, f"--method {spec}")
        return name + "@" + ",".join(f"{k}={v}" for k, v in options.items()), fn

    if spec == "bicubic":

        def run_bicubic(lr: Tensor, s: int) -> Tensor:
            return upsample(lr, s, kernel=bicubic).clamp(0, 1)  # type: ignore[arg-type]

        run_bicubic.params, run_bicubic.sampling_steps = 0, None  # type: ignore[attr-defined]
        return "bicubic", run_bicubic
    if ":" in spec and spec.split(":", 1)[0] in ("edsr", "rcan", "swinir"):
        kind, path = spec.split(":", 1)
        p = Path(path)
        if p.is_dir():  # a baseline trained by `diffsr train edsr ...`: a normal diffsr run
            _, run = method_from_spec(path, scale, steps=1, device=device)
            net = run.loaded.config.net.name  # type: ignore[attr-defined]
            if net != kind:  # a diffusion run (or another baseline) shown under the baseline's name
                right = f"{net}:{path}" if run.loaded.model.is_baseline else path  # type: ignore[attr-defined]
                raise DiffsrError(f"--method {spec}: {path} is a run of net '{net}', not of '{kind}'; "
                                  f"pass --method {right}")
            return kind, run
        from diffsr.nets.baselines import load_baseline

        net, info = load_baseline(p)  # a pretrained .pth / .safetensors file (weights_only)
        if info.get("scale") not in (None, scale):
            raise DiffsrError(f"{p}: a x{info['scale']} model, evaluation asks for x{scale}")
        net = net.eval()
        net_c = int(info.get("in_channels") or 0) or _first_conv_channels(net)

        def run_baseline(lr: Tensor, s: int) -> Tensor:
            with torch.no_grad():  # the same channel handling as super_resolve
                return match_channels(lambda x: net(x).clamp(0, 1), lr, net_c, str(p))

        run_baseline.params = sum(p.numel() for p in net.parameters())  # type: ignore[attr-defined]
        run_baseline.sampling_steps = 1  # type: ignore[attr-defined]
        return kind, run_baseline
    loaded = load_model(spec, device=device)
    if loaded.scale != scale:
        raise DiffsrError(f"{spec}: the model was trained for x{loaded.scale}, evaluation asks for x{scale}")
    name = loaded.config.name if loaded.config.name != "custom" else Path(spec).name

    def run_model(lr: Tensor, s: int, measurement: Tensor | None = None) -> Tensor:
        return super_resolve(loaded, lr, steps=steps, measurement=measurement).cpu()

    run_model.loaded = loaded  # type: ignore[attr-defined]
    run_model.accepts_measurement = True  # type: ignore[attr-defined]
    run_model.params = sum(p.numel() for p in loaded.model.parameters())  # type: ignore[attr-defined]
    run_model.sampling_steps = (  # type: ignore[attr-defined]
        1 if loaded.model.is_baseline else steps or loaded.config.sample.steps or loaded.model.process.default_steps
    )
    return name, run_model


SAMPLE_OPTIONS = ("consistency", "consistency_iters", "guidance", "seed", "tile", "tile_mode", "overlap", "detail",
                  "steps")


def _split_sample_options(spec: str) -> tuple[str, dict[str, str]]:
    """'RUN@k=v,k2=v2' -> ('RUN', {k: v, k2: v2}); a spec without '@k=v' is returned unchanged."""
    base, at, tail = spec.rpartition("@")
    if not at or "=" not in tail:
        return spec, {}
    options: dict[str, str] = {}
    for item in tail.split(","):
        key, eq, value = item.partition("=")
        key = key.strip().removeprefix("sample.")
        if not eq or key not in SAMPLE_OPTIONS:
            raise DiffsrError(
                f"--method {spec}: '{item}' is not KEY=VALUE with KEY one of {', '.join(SAMPLE_OPTIONS)}"
            )
        options[key] = value.strip()
    return base, options


def with_sample_options(sample: Any, options: dict[str, Any], where: str) -> Any:
    """``sample`` (a SampleConfig) with ``options`` applied, checked like any config override
    (one-line ConfigError naming ``where``)."""
    from diffsr.config import validate

    return validate({"sample": {**sample.model_dump(), **options}}, where).sample
