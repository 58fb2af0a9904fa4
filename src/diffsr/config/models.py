"""The run config's models: the sections and the unions built from the registries.

Each union-typed field (``codec``, ``process``, ``net``, ``data.degradation``, ``losses.terms``
and each term's ``gate`` and ``weight``) is the discriminated union of the config models its
registry holds; :func:`_rebuild` widens them when a plug-in registers after import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from diffsr.codecs import CODECS, PixelConfig, VAEConfig, WaveletConfig
from diffsr.core.errors import ConfigError
from diffsr.core.schema import Strict
from diffsr.data.degrade import (
    DEGRADATIONS,
    BicubicConfig,
    BlurNoiseConfig,
    InfraredConfig,
    KSpaceConfig,
    RealESRGANConfig,
)
from diffsr.data.slice_profile import SliceProfileConfig
from diffsr.losses import GATES, SCHEDULES, TERMS, TermBase
from diffsr.losses.adversarial import GANTerm
from diffsr.losses.edges import EdgeTerm
from diffsr.losses.feature import FeatureTerm
from diffsr.losses.frequency import FFLTerm
from diffsr.losses.gates import BinsGateConfig, HardGateConfig, LinearGateConfig, NoGateConfig
from diffsr.losses.latent import LatentTerm
from diffsr.losses.latent_perceptual import LatentPerceptualTerm
from diffsr.losses.perceptual import LPIPSTerm
from diffsr.losses.pixel import CharbonnierTerm, PixelTerm
from diffsr.losses.schedules import (
    AdaptiveSchedule,
    ConstantSchedule,
    LinearSchedule,
    RampSchedule,
    Stage,
    StagesSchedule,
)
from diffsr.losses.ssim import SSIMTerm
from diffsr.nets import NETS, BaselineNetConfig, ResNetConfig, UNetConfig
from diffsr.processes import PROCESSES, DDPMConfig, DirectConfig, FlowConfig, RDDMConfig, ResShiftConfig

# the built-in components' config models are re-exported here (they are defined beside each
# component): ``from diffsr.config import FlowConfig, SSIMTerm, HardGateConfig`` keeps working
BUILTIN_MODELS = (
    PixelConfig, WaveletConfig, VAEConfig, FlowConfig, DDPMConfig, ResShiftConfig, RDDMConfig, DirectConfig,
    UNetConfig, ResNetConfig, BaselineNetConfig, BicubicConfig, BlurNoiseConfig, KSpaceConfig, InfraredConfig,
    RealESRGANConfig, SliceProfileConfig,
    TermBase, PixelTerm, CharbonnierTerm, SSIMTerm, LPIPSTerm, FFLTerm, EdgeTerm, LatentTerm, LatentPerceptualTerm,
    GANTerm, FeatureTerm, NoGateConfig, HardGateConfig, LinearGateConfig, BinsGateConfig, ConstantSchedule,
    LinearSchedule, RampSchedule, Stage, StagesSchedule, AdaptiveSchedule,
)

__all__ = [
    "BUILTIN_MODELS",
    "AdaptiveSchedule",
    "BaselineNetConfig",
    "BicubicConfig",
    "BinsGateConfig",
    "BlurNoiseConfig",
    "CharbonnierTerm",
    "CodecConfig",
    "Config",
    "ConstantSchedule",
    "DDPMConfig",
    "DataConfig",
    "DegradationConfig",
    "DirectConfig",
    "EdgeTerm",
    "EvalConfig",
    "FFLTerm",
    "FeatureTerm",
    "FlowConfig",
    "GANTerm",
    "GateConfig",
    "HardGateConfig",
    "InfraredConfig",
    "KSpaceConfig",
    "LPIPSTerm",
    "LatentPerceptualTerm",
    "LatentTerm",
    "LinearGateConfig",
    "LinearSchedule",
    "LossesConfig",
    "NetConfig",
    "NoGateConfig",
    "NonFiniteConfig",
    "PixelConfig",
    "PixelTerm",
    "ProcessConfig",
    "RDDMConfig",
    "RampSchedule",
    "ResNetConfig",
    "RealESRGANConfig",
    "ResShiftConfig",
    "SSIMTerm",
    "SampleConfig",
    "SliceProfileConfig",
    "ScheduleConfig",
    "Stage",
    "StagesSchedule",
    "Strict",
    "TermBase",
    "TrainConfig",
    "UNetConfig",
    "VAEConfig",
    "WaveletConfig",
]


# ----------------------------------------------------------------------------- the unions
#
# (field, registry, default tag): a section whose model comes from a registry. The default tag
# is what a mapping without its tag means (``net: {size: tiny}`` is a unet).


def _schedule_union() -> Any:
    return SCHEDULES.config_union(default="constant")


def _base_schedule_union() -> Any:
    return SCHEDULES.config_union(lambda e: not e.caps.adaptive, default="constant")


def _gate_union() -> Any:
    return GATES.config_union(default="none")


def _term_union() -> Any:
    return TERMS.config_union()


def _degradation_union() -> Any:
    return DEGRADATIONS.config_union(default="bicubic")


def _codec_union() -> Any:
    return CODECS.config_union(default="pixel")


def _process_union() -> Any:
    return PROCESSES.config_union(default="flow")


def _net_union() -> Any:
    return NETS.config_union(default="unet")


# ----------------------------------------------------------------------------- losses


class NonFiniteConfig(Strict):
    """What to do with NaN/Inf: drop the term, skip the step, or stop training."""

    policy: Literal["skip_term", "skip_step", "stop"] = "skip_term"
    max_consecutive: int = Field(20, ge=1)


class LossesConfig(Strict):
    """The loss stack: the diffusion term's weight and the fidelity terms (any registered term)."""

    diffusion_weight: float = Field(1.0, ge=0)
    terms: list[_term_union()] = Field(default_factory=list)  # type: ignore[valid-type]
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


def _one_axis(degradation: Any) -> bool:
    """True when a degradation section (a mapping or a config model) names a one-axis degradation."""
    name = degradation.get("name", "bicubic") if isinstance(degradation, dict) else getattr(degradation, "name", None)
    return isinstance(name, str) and name in DEGRADATIONS and bool(DEGRADATIONS.caps(name).one_axis)


class DataConfig(Strict):
    """Where images come from and how training pairs are made."""

    train: str | None = None  # folder / file / volume; None: the built-in samples
    val: str | None = None  # None: a deterministic split of ``train``
    lr_dir: str | None = None  # paired LR folder (same file names) for real pairs
    unpaired_dir: str | None = None  # LR-only images (paired=False)
    # the in-plane SR factor; 1 (the model grid is the HR grid) with a one-axis degradation such as
    # slice_profile, which sets its own factor and axis (and is then the default)
    scale: Literal[1, 2, 3, 4, 8] = 4
    patch_size: int = Field(64, ge=8)
    batch_size: int = Field(8, ge=1)
    channels: Literal[1, 3] = 1
    degradation: _degradation_union() = Field(default_factory=BicubicConfig)  # type: ignore[valid-type]
    # auto: dtype range for 8-bit images; min-max (the data's range) for wider integers (14-bit thermal
    # counts, HU, int32), floats and CT; percentiles for MRI volumes/series (diffsr.data.normalize)
    normalization: Literal["auto", "dtype", "minmax", "percentile", "window"] = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] | None = None  # CT window (low, high) in file units; None: a DICOM's own
    slice_axis: int = Field(2, ge=0, le=2)
    volume_index: int | None = Field(None, ge=0)  # 4-D NIfTI: which volume (None: a 4-D file is an error)
    min_foreground: float = Field(0.05, ge=0, le=1)  # skip volume slices emptier than this
    val_fraction: float = Field(0.1, ge=0, lt=1)
    val_images: int = Field(4, ge=0)
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes preparing the next batches
    cache: bool = True

    @model_validator(mode="before")
    @classmethod
    def _one_axis_default_scale(cls, data: Any) -> Any:
        """A one-axis degradation without a ``scale`` means scale 1 (its LR lies on the HR grid)."""
        if isinstance(data, dict) and "scale" not in data and _one_axis(data.get("degradation")):
            data = {**data, "scale": 1}
        return data

    @model_validator(mode="after")
    def _patch(self) -> DataConfig:
        one_axis = _one_axis(self.degradation)
        if one_axis and self.scale != 1:
            raise ValueError(
                f"scale {self.scale} does not apply with the one-axis degradation '{self.degradation.name}' (it "
                f"upsamples by degradation.factor along degradation.axis only): set data.scale to 1 or leave it out"
            )
        if not one_axis and self.scale == 1:
            raise ValueError("scale 1 (no in-plane upsampling) needs a one-axis degradation such as "
                             "'slice_profile' (data.degradation.name)")
        if self.patch_size % self.scale:
            raise ValueError(f"patch_size {self.patch_size} is not a multiple of scale {self.scale}")
        # a non-default value of a key the chosen normalization does not read is an error, not ignored
        if self.window is not None and self.normalization != "window":
            raise ValueError(f"window is set but normalization is '{self.normalization}' (window needs "
                             "normalization: window)")
        if tuple(self.percentiles) != (0.5, 99.5) and self.normalization not in ("percentile", "auto"):
            raise ValueError(f"percentiles are set but normalization is '{self.normalization}'")
        factor = float(getattr(self.degradation, "factor", 0) or 0)
        if one_axis and factor and self.patch_size < 4 * factor:
            raise ValueError(f"patch_size {self.patch_size} holds fewer than 4 thick slices of factor {factor:g}: "
                             f"use patch_size >= {math.ceil(4 * factor)}")
        return self


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
    # share of each batch trained at the one-step sampler's start time (the faithful output's
    # timestep); those rows feed the fidelity terms only, the rest the diffusion loss (reweighted
    # by 1 / (1 - fraction)), so the diffusion objective keeps its own timestep distribution
    faithful_fraction: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _applies(self) -> TrainConfig:
        if not self.reshard_after_forward and self.shard == "none":
            raise ValueError("reshard_after_forward is set but shard is 'none' (it applies to shard: fsdp; under an "
                             "Accelerate FSDP / DeepSpeed config that config decides it)")
        return self
    audit: bool = True


class SampleConfig(Strict):
    """Inference: steps, tiling and data consistency."""

    steps: int | None = Field(None, ge=1)  # None: the process's default
    tile: int | None = Field(None, ge=16)  # HR tile size; None: whole image
    # exact: tiles give the whole-image result (halo + whole-image norm/attention state, slower);
    # blend: independent overlapping tiles, raised-cosine blended (fast, differs by ~1e-2 at most);
    # auto: exact where the model and tile allow it, else blend with a warning saying why
    tile_mode: Literal["auto", "exact", "blend"] = "auto"
    # exact mode: MB of tile activations kept between its passes over the tiles (one forward per
    # tile instead of one per GroupNorm layer); 0 recomputes. Changes the time, never the result
    tile_cache: int = Field(1024, ge=0)
    overlap: int = Field(32, ge=0)  # blend mode only
    consistency: Literal["none", "backprojection", "kspace"] = "none"
    consistency_iters: int = Field(3, ge=1)
    guidance: float = Field(0.0, ge=0)  # DPS-style gradient step size
    seed: int = 0
    # faithful (0: the one-step estimate) .. realistic (1: a full-chain sample); in between the chain
    # starts from the re-noised faithful estimate (SDEdit). None: a plain ``steps``-step sample
    detail: float | None = Field(None, ge=0, le=1)


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
    plugins: list[str] = Field(default_factory=list)  # modules / .py files registering components
    data: DataConfig = Field(default_factory=DataConfig)
    codec: _codec_union() = Field(default_factory=PixelConfig)  # type: ignore[valid-type]
    process: _process_union() = Field(default_factory=FlowConfig)  # type: ignore[valid-type]
    net: _net_union() = Field(default_factory=UNetConfig)  # type: ignore[valid-type]
    losses: LossesConfig = Field(default_factory=LossesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _feed_forward_pairs(self) -> Config:
        net_ff = NETS.caps(self.net.name).feed_forward
        process_ff = PROCESSES.caps(self.process.name).feed_forward
        if net_ff and (not process_ff or not CODECS.caps(self.codec.name).pixel_space):
            raise ValueError(
                f"net '{self.net.name}' is a feed-forward baseline: use process 'direct' and codec 'pixel'"
            )
        if process_ff and not net_ff:
            raise ValueError(
                f"process '{self.process.name}' trains a feed-forward baseline: set net.name to "
                + " or ".join(n for n in NETS.names() if NETS.caps(n).feed_forward)
            )
        return self

    def to_yaml(self) -> str:
        """The full config as YAML (reloads to an equal Config)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ----------------------------------------------------------------------------- rebuilding


def _set_annotation(model: type[BaseModel], field: str, annotation: Any, *, rebuild: bool = True) -> None:
    """Give ``model.field`` a new annotation (same default) and rebuild the model's validator."""
    from pydantic.fields import FieldInfo

    old = model.model_fields[field]
    default = Field(default_factory=old.default_factory) if old.default_factory is not None else old.default
    model.model_fields[field] = FieldInfo.from_annotated_attribute(annotation, default)
    if rebuild:
        model.model_rebuild(force=True)


def _rebuild() -> None:
    """Widen every union-typed field to what the registries hold now (a plug-in registered)."""
    _set_annotation(AdaptiveSchedule, "base", _base_schedule_union())
    schedule, gate = _schedule_union(), _gate_union()
    for term in TERMS.configs():
        _set_annotation(term, "weight", schedule, rebuild=False)
        _set_annotation(term, "gate", gate)
    _set_annotation(LossesConfig, "terms", list[_term_union()])  # type: ignore[misc]
    _set_annotation(DataConfig, "degradation", _degradation_union())
    _set_annotation(Config, "codec", _codec_union(), rebuild=False)
    _set_annotation(Config, "process", _process_union(), rebuild=False)
    _set_annotation(Config, "net", _net_union())


for _registry in (SCHEDULES, GATES, TERMS, DEGRADATIONS, CODECS, PROCESSES, NETS):
    _registry.subscribe(_rebuild)


class _SectionUnion:
    """``CodecConfig(name="wavelet", levels=3)`` -> the registered codec config it names."""

    def __init__(self, what: str, union: Callable[[], Any]) -> None:
        self.what, self._union = what, union

    def __call__(self, **fields: Any) -> Any:
        union = self._union()
        try:
            return TypeAdapter(union).validate_python(fields)
        except ValidationError as err:
            from diffsr.config.messages import format_validation_error

            raise ConfigError(format_validation_error(err, self.what, root=union, root_field=self.what)) from None

    def __repr__(self) -> str:
        return f"<{self.what} config: any registered {self.what}>"


#: constructors for a section from keyword arguments (the member is picked by its tag field)
CodecConfig = _SectionUnion("codec", _codec_union)
ProcessConfig = _SectionUnion("process", _process_union)
NetConfig = _SectionUnion("net", _net_union)
DegradationConfig = _SectionUnion("degradation", _degradation_union)
GateConfig = _SectionUnion("gate", _gate_union)
ScheduleConfig = _SectionUnion("weight", _schedule_union)

