"""Configuration: pydantic models for every section, YAML presets and ``--set`` overrides.

Every model forbids unknown keys, so a typo is a user error that names the key and, where one
exists, the closest valid key::

    error: unknown key 'codec.layuot' (did you mean 'codec.layout'?)

Presets are YAML files shipped in ``diffsr/presets``; ``load_config`` takes a preset name or
a path, applies ``a.b=c`` overrides (values parsed as YAML scalars) and validates once.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffsr.core.errors import ConfigError
from diffsr.core.registry import closest


class Strict(BaseModel):
    """Base: unknown keys are errors; assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- schedules


class ConstantSchedule(Strict):
    """w(step) = value."""

    kind: Literal["constant"] = "constant"
    value: float = Field(1.0, ge=0)


class LinearSchedule(Strict):
    """start until ``begin``, then linear to ``end`` at ``begin + steps``, then ``end``."""

    kind: Literal["linear"] = "linear"
    start: float = Field(0.0, ge=0)
    end: float = Field(1.0, ge=0)
    begin: int = Field(0, ge=0)
    steps: int = Field(1000, gt=0)


class RampSchedule(Strict):
    """0 until ``warmup``, linear ramp to ``value`` at ``ramp_end``, then ``value``."""

    kind: Literal["ramp"] = "ramp"
    value: float = Field(1.0, ge=0)
    warmup: int = Field(0, ge=0)
    ramp_end: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> RampSchedule:
        if self.ramp_end < self.warmup:
            raise ValueError("ramp_end must be >= warmup")
        return self


class Stage(Strict):
    """One knot of a piecewise schedule: the weight at ``step`` (linear between knots)."""

    step: int = Field(ge=0)
    value: float = Field(ge=0)


class StagesSchedule(Strict):
    """Piecewise-linear through knots; constant before the first and after the last.

    A knot pair with the same step makes a jump (e.g. stages switching on at 3000).
    """

    kind: Literal["stages"] = "stages"
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _sorted(self) -> StagesSchedule:
        steps = [s.step for s in self.stages]
        if steps != sorted(steps):
            raise ValueError("stages must be sorted by step")
        return self


class AdaptiveSchedule(Strict):
    """VQGAN-style: w = base(step) * ||grad L_rec|| / (||grad L_term|| + eps) at the last layer.

    ``base`` is itself a schedule (warm-up, ramp); the ratio is clamped to [0, max_ratio]
    and detached.
    """

    kind: Literal["adaptive"] = "adaptive"
    base: ConstantSchedule | LinearSchedule | RampSchedule | StagesSchedule = Field(
        default_factory=ConstantSchedule, discriminator="kind"
    )
    max_ratio: float = Field(1e4, gt=0)
    eps: float = Field(1e-4, gt=0)


Schedule = Annotated[
    Union[ConstantSchedule, LinearSchedule, RampSchedule, StagesSchedule, AdaptiveSchedule],
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- gates


class GateConfig(Strict):
    """Timestep gate g(t) in the process's own t units.

    - none: 1 for every t
    - hard: 1 if t <= t_max else 0
    - linear: clamp((t_max - t) / t_max, 0, 1)  (seed 000)
    - bins: value of the bin holding t; ``edges`` ascending, ``values`` has len(edges) + 1
      (ResShift T=15: edges [5, 10], values [1.0, 0.1, 0.001])
    """

    kind: Literal["none", "hard", "linear", "bins"] = "none"
    t_max: float | None = Field(None, gt=0)
    edges: list[float] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> GateConfig:
        if self.kind in ("hard", "linear") and self.t_max is None:
            raise ValueError(f"gate '{self.kind}' needs t_max")
        if self.kind == "bins":
            if len(self.values) != len(self.edges) + 1:
                raise ValueError("bins gate needs len(values) == len(edges) + 1")
            if self.edges != sorted(self.edges):
                raise ValueError("bins gate edges must be ascending")
            if any(v < 0 for v in self.values):
                raise ValueError("bins gate values must be >= 0")
        return self


# ----------------------------------------------------------------------------- loss terms


class TermBase(Strict):
    """Fields shared by every loss term."""

    label: str | None = None  # key in reports; defaults to the term name
    weight: Schedule = Field(default_factory=ConstantSchedule)
    gate: GateConfig = Field(default_factory=GateConfig)
    paired_only: bool = True  # unpaired samples get no fidelity term

    @property
    def key(self) -> str:
        """The term's name in reports and logs."""
        return self.label or self.name  # type: ignore[attr-defined]


class PixelTerm(TermBase):
    """L1 / L2 / Charbonnier on the decoded x0_hat vs HR (pixel space)."""

    name: Literal["l1", "l2", "charbonnier"]
    eps: float = Field(1e-3, gt=0)  # Charbonnier only


class SSIMTerm(TermBase):
    """1 - SSIM (Gaussian window, sigma 1.5) in pixel space."""

    name: Literal["ssim", "msssim"]
    window: int = Field(11, ge=3)
    sigma: float = Field(1.5, gt=0)
    data_range: float = Field(1.0, gt=0)


class LPIPSTerm(TermBase):
    """LPIPS (alex | vgg) with weights from a local file or the torch hub cache."""

    name: Literal["lpips"]
    net: Literal["alex", "vgg"] = "alex"
    weights: str | None = None  # LPIPS linear-layer weights (.pth); None: lpips package / hub
    backbone_weights: str | None = None  # torchvision backbone weights; None: torch hub cache


class FFLTerm(TermBase):
    """Focal frequency loss (Jiang et al. 2021), computed in float32."""

    name: Literal["ffl"]
    alpha: float = Field(1.0, ge=0)
    log_matrix: bool = False
    batch_matrix: bool = False


class EdgeTerm(TermBase):
    """Edge (L1 of Sobel gradients inside the GT edge mask) or flat (HF energy outside it)."""

    name: Literal["edge", "flat"]
    threshold: float = Field(0.1, gt=0)  # on the GT Sobel magnitude, data in [0, 1]


class LatentTerm(TermBase):
    """L1 / L2 between z0_hat and z0 in the latent space (no decode)."""

    name: Literal["latent_l1", "latent_l2"]


class LatentPerceptualTerm(TermBase):
    """Latent perceptual loss on VAE decoder features (VAE codec only)."""

    name: Literal["latent_perceptual"]
    layers: int = Field(3, ge=1)


class GANTerm(TermBase):
    """PatchGAN adversarial term for the generator; the discriminator trains alongside."""

    name: Literal["gan"]
    loss: Literal["hinge", "nonsaturating"] = "hinge"
    layers: int = Field(3, ge=1, le=5)
    width: int = Field(64, ge=8)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.9)
    r1_gamma: float = Field(10.0, ge=0)
    r1_interval: int = Field(16, ge=1)
    warmup: int = Field(0, ge=0)  # discriminator-only steps before the generator term acts


class FeatureTerm(TermBase):
    """L1 between features of a frozen user network (TorchScript file) for x0_hat and HR."""

    name: Literal["feature"]
    model: str  # path to a TorchScript (.pt) module
    layers: list[str] = Field(default_factory=list)  # named submodules; empty: the output


TermConfig = Annotated[
    Union[
        PixelTerm,
        SSIMTerm,
        LPIPSTerm,
        FFLTerm,
        EdgeTerm,
        LatentTerm,
        LatentPerceptualTerm,
        GANTerm,
        FeatureTerm,
    ],
    Field(discriminator="name"),
]

PIXEL_SPACE_TERMS = {
    "l1", "l2", "charbonnier", "ssim", "msssim", "lpips", "ffl", "edge", "flat", "gan", "feature",
}


class NonFiniteConfig(Strict):
    """What to do with NaN/Inf: drop the term, skip the step, or stop training."""

    policy: Literal["skip_term", "skip_step", "stop"] = "skip_term"
    max_consecutive: int = Field(20, ge=1)


class LossesConfig(Strict):
    """The loss stack: the diffusion term's weight and the fidelity terms."""

    diffusion_weight: float = Field(1.0, ge=0)
    terms: list[TermConfig] = Field(default_factory=list)
    decode_chunk: int | None = Field(None, ge=1)  # decode at most this many samples at once
    nonfinite: NonFiniteConfig = Field(default_factory=NonFiniteConfig)

    @model_validator(mode="after")
    def _unique(self) -> LossesConfig:
        keys = [t.key for t in self.terms]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"duplicate term label(s) {sorted(dup)}: set 'label' to tell them apart")
        return self


# ----------------------------------------------------------------------------- data


class DegradationConfig(Strict):
    """How LR is made from HR at train time (see docs/data.md)."""

    name: Literal["bicubic", "blur_noise", "realesrgan", "kspace", "infrared"] = "bicubic"
    blur_sigma: tuple[float, float] = (0.2, 2.0)
    noise_sigma: tuple[float, float] = (0.0, 0.02)  # Gaussian, data in [0, 1]
    poisson: float = Field(0.0, ge=0)  # probability of Poisson noise
    rician: float = Field(0.0, ge=0)  # Rician noise sigma (k-space)
    stripe_sigma: tuple[float, float] = (0.0, 0.03)  # infrared column fixed-pattern noise
    nonuniformity: tuple[float, float] = (0.0, 0.1)  # infrared low-frequency gain drift
    contrast: tuple[float, float] = (0.7, 1.0)  # infrared contrast factor


class DataConfig(Strict):
    """Where images come from and how training pairs are made."""

    train: str | None = None  # folder / file / volume; None: the built-in samples
    val: str | None = None  # None: a deterministic split of ``train``
    lr_dir: str | None = None  # paired LR folder (same file names) for real pairs
    unpaired_dir: str | None = None  # LR-only images (paired=False)
    scale: Literal[2, 3, 4, 8] = 4
    patch_size: int = Field(64, ge=8)
    batch_size: int = Field(8, ge=1)
    channels: Literal[1, 3] = 1
    degradation: DegradationConfig = Field(default_factory=DegradationConfig)
    # auto: dtype range for 8/16-bit images, percentiles for MRI volumes/series, min-max for floats
    normalization: Literal["auto", "dtype", "minmax", "percentile", "window"] = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] | None = None  # CT window (low, high) in file units
    slice_axis: int = Field(2, ge=0, le=2)
    volume_index: int = Field(0, ge=0)
    min_foreground: float = Field(0.05, ge=0, le=1)  # skip volume slices emptier than this
    val_fraction: float = Field(0.1, ge=0, lt=1)
    val_images: int = Field(4, ge=0)
    num_workers: int = Field(0, ge=0)
    cache: bool = True

    @model_validator(mode="after")
    def _patch(self) -> DataConfig:
        if self.patch_size % self.scale:
            raise ValueError(f"patch_size {self.patch_size} is not a multiple of scale {self.scale}")
        return self


# ----------------------------------------------------------------------------- models


class CodecConfig(Strict):
    """The space diffusion runs in."""

    name: Literal["pixel", "wavelet", "vae"] = "pixel"
    wavelet: Literal["haar", "db2"] = "haar"
    levels: int = Field(2, ge=1, le=3)
    layout: Literal["ll", "full", "all", "all_learnable"] = "all"
    path: str | None = None  # VAE: a local diffusers AutoencoderKL folder


class FlowConfig(Strict):
    """Rectified flow with v-prediction."""

    name: Literal["flow"] = "flow"
    shift: float = Field(1.0, gt=0)
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    min_snr_gamma: float | None = Field(None, gt=0)
    sample_steps: int = Field(8, ge=1)


class DDPMConfig(Strict):
    """Variance-preserving DDPM with eps / x0 / v prediction and a DDIM sampler."""

    name: Literal["ddpm"] = "ddpm"
    schedule: Literal["linear", "cosine"] = "linear"
    train_steps: int = Field(1000, ge=2)
    prediction: Literal["eps", "x0", "v"] = "eps"
    min_snr_gamma: float | None = Field(5.0, gt=0)
    sample_steps: int = Field(50, ge=1)


class ResShiftConfig(Strict):
    """ResShift residual shifting (Yue et al. 2023) with x0 prediction."""

    name: Literal["resshift"] = "resshift"
    steps: int = Field(15, ge=2)
    kappa: float = Field(2.0, gt=0)
    p: float = Field(0.3, gt=0)
    min_noise: float = Field(0.04, gt=0)
    eta_max: float = Field(0.99, gt=0, lt=1)
    residual: bool = True  # x0_hat = condition + net output
    min_snr_gamma: float | None = Field(None, gt=0)


class RDDMConfig(Strict):
    """Residual denoising diffusion (Liu et al. 2024): residual and noise on separate schedules."""

    name: Literal["rddm"] = "rddm"
    steps: int = Field(10, ge=2)
    noise_scale: float = Field(0.01, gt=0)
    prediction: Literal["res", "res_noise"] = "res"
    sample_steps: int | None = Field(None, ge=1)
    res_weight: float = Field(1.0, ge=0)  # weight of the residual loss L_res
    noise_weight: float | None = Field(None, ge=0)  # of the noise loss L_eps; None: 1 for res_noise, 0 for res


class DirectConfig(Strict):
    """No diffusion: one-pass regression (for the EDSR / RCAN / SwinIR baselines)."""

    name: Literal["direct"] = "direct"
    loss: Literal["l1", "l2"] = "l1"


ProcessConfig = Annotated[
    Union[FlowConfig, DDPMConfig, ResShiftConfig, RDDMConfig, DirectConfig], Field(discriminator="name")
]


class NetConfig(Strict):
    """The conditional UNet denoiser, or a feed-forward baseline (with process 'direct')."""

    name: Literal["unet", "edsr", "rcan", "swinir"] = "unet"
    size: Literal["tiny", "small", "base"] = "tiny"
    width: int | None = Field(None, ge=8)  # overrides the size preset
    channel_mult: list[int] | None = None
    num_res_blocks: int | None = Field(None, ge=1)
    attention_levels: list[int] | None = None
    dropout: float = Field(0.0, ge=0, lt=1)


# ----------------------------------------------------------------------------- run


class TrainConfig(Strict):
    """Optimisation, checkpoints and logging."""

    steps: int = Field(1000, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    ema_decay: float | None = Field(0.999, gt=0, lt=1)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    # multi-process: "none" replicates the model; "fsdp" shards the denoiser's blocks (FSDP2,
    # docs/distributed.md); reshard_after_forward false keeps them gathered until backward (ZeRO-2-like)
    shard: Literal["none", "fsdp"] = "none"
    reshard_after_forward: bool = True
    seed: int = 0
    log_every: int = Field(10, ge=1)
    ckpt_every: int = Field(500, ge=1)
    keep_last: int = Field(3, ge=1)
    val_every: int | None = Field(None, ge=1)
    compile: bool = False
    threads: int | None = Field(None, ge=1)
    time_limit: float | None = Field(None, gt=0)  # seconds; stop (and checkpoint) when reached
    audit: bool = True


class SampleConfig(Strict):
    """Inference: steps, tiling and data consistency."""

    steps: int | None = Field(None, ge=1)  # None: the process's default
    tile: int | None = Field(None, ge=16)  # HR tile size; None: whole image
    # exact: tiles give the whole-image result (halo + whole-image norm/attention state, slower);
    # blend: independent overlapping tiles, raised-cosine blended (fast, differs by ~1e-2 at most);
    # auto: exact where the model and tile allow it, else blend with a warning saying why
    tile_mode: Literal["auto", "exact", "blend"] = "auto"
    overlap: int = Field(32, ge=0)  # blend mode only
    consistency: Literal["none", "backprojection", "kspace"] = "none"
    consistency_iters: int = Field(3, ge=1)
    guidance: float = Field(0.0, ge=0)  # DPS-style gradient step size
    seed: int = 0


class EvalConfig(Strict):
    """Metric conventions, pinned and written into every report."""

    data_range: float = Field(1.0, gt=0)
    crop_border: int | None = Field(None, ge=0)  # None: = scale
    y_channel: bool = True  # RGB -> Y (BT.601); grayscale uses its one channel
    quantize: bool = False  # round to the output bit depth before metrics
    lpips_net: Literal["alex", "vgg"] = "alex"
    lpips_weights: str | None = None


class Config(Strict):
    """A whole diffsr run."""

    name: str = "custom"
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    codec: CodecConfig = Field(default_factory=CodecConfig)
    process: ProcessConfig = Field(default_factory=FlowConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    losses: LossesConfig = Field(default_factory=LossesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _baseline_needs_direct(self) -> Config:
        baseline = self.net.name != "unet"
        if baseline and (self.process.name != "direct" or self.codec.name != "pixel"):
            raise ValueError(
                f"net '{self.net.name}' is a feed-forward baseline: use process 'direct' and codec 'pixel'"
            )
        if self.process.name == "direct" and not baseline:
            raise ValueError("process 'direct' trains a feed-forward baseline: set net.name to edsr, rcan or swinir")
        return self

    def to_yaml(self) -> str:
        """The full config as YAML (reloads to an equal Config)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ----------------------------------------------------------------------------- loading

PRESET_PACKAGE = "diffsr.presets"


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    root = resources.files(PRESET_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The raw YAML of a shipped preset."""
    names = preset_names()
    if name not in names:
        hint = closest(name, names)
        tail = f" (did you mean '{hint}'?)" if hint else " (see 'diffsr presets')"
        raise ConfigError(f"unknown preset '{name}'{tail}")
    return resources.files(PRESET_PACKAGE).joinpath(f"{name}.yaml").read_text()


def _read_source(source: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read config ({err.__class__.__name__})") from None
        where = str(path)
    else:
        text, where = preset_text(str(source)), f"preset {source}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}:{line} invalid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
    return data, where


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a', 'b', 'c'], value parsed as a YAML scalar/list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``data[parts...] = value``; list items are addressed by index (losses.terms.0.weight)."""
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            idx = _index(part, node, parts[: i + 1])
            node = node[idx]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if nxt.isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_index(last, node, parts)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {'.'.join(parts)}: '{'.'.join(parts[:-1])}' is not a section")


def _index(part: str, node: list[Any], parts: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {'.'.join(parts)}: no item {part} (the list has {len(node)})")
    return int(part)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (sub)model reached by ``loc`` (best effort, for hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part in current.model_fields:
                current = current.model_fields[part].annotation
                current = _unwrap(current)
                continue
            # a discriminated-union tag such as 'flow' or 'ssim' in the loc
            continue
        break
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    if isinstance(current, list):
        names: list[str] = []
        for m in current:
            names += [n for n in m.model_fields if n not in names]
        return names
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated / Optional / list wrappers down to a model or a list of union members."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _unwrap(args[0])
    if origin in (list, tuple):
        return _unwrap(args[0]) if args else annotation
    if origin is Union or str(origin) == "types.UnionType":
        members = [_unwrap(a) for a in args if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) == 1:
            return models[0]
        if models:
            return models
    return annotation


def format_validation_error(err: ValidationError, where: str) -> str:
    """The first pydantic error as one line: '<where>: <key>: <message>' with a hint."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    # drop discriminator tags ('flow', 'ssim', ...) from the dotted key shown to the user
    shown = [str(p) for p in loc if not (isinstance(p, str) and _is_tag(p))]
    key = ".".join(shown)
    kind = first["type"]
    if kind == "extra_forbidden":
        names = _fields_at(Config, loc[:-1])
        hint = closest(str(loc[-1]), names)
        tail = f" (did you mean '{'.'.join(shown[:-1] + [hint])}'?)" if hint else ""
        return f"{where}: unknown key '{key}'{tail}"
    msg = first["msg"]
    if kind == "literal_error":
        got = first.get("input")
        return f"{where}: {key}: {got!r} is not allowed; {msg.lower()}"
    if kind == "union_tag_invalid":
        return f"{where}: {key}: {msg}"
    value = first.get("input")
    shown_value = f" (got {value!r})" if not isinstance(value, dict | list) else ""
    return f"{where}: {key}: {msg}{shown_value}"


_TAGS = {
    "constant", "linear", "ramp", "stages", "adaptive", "flow", "ddpm", "resshift", "l1", "l2",
    "rddm", "direct", "charbonnier", "ssim", "msssim", "lpips", "ffl", "edge", "flat", "latent_l1", "latent_l2",
    "latent_perceptual", "gan", "feature",
}


def _is_tag(part: str) -> bool:
    return part in _TAGS


def validate(data: dict[str, Any], where: str = "config") -> Config:
    """Validate a plain mapping into a Config, turning pydantic errors into ConfigError."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a preset name or YAML path (default: the 'demo' preset) and apply overrides."""
    data, where = _read_source(source if source is not None else "demo")
    data = copy.deepcopy(data)
    for item in overrides or []:
        parts, value = parse_override(item)
        apply_override(data, parts, value)
    if overrides:
        where = f"{where} (with --set)"
    return validate(data, where)


def save_config(config: Config, path: Path) -> None:
    """Write ``config`` as YAML, atomically."""
    from diffsr.core.atomic import atomic_write_text

    atomic_write_text(path, config.to_yaml())
