"""Configuration: the run config, assembled from the components' registered config models.

Every component (codec, process, net, loss term, gate, weight schedule, degradation) defines
its pydantic config model beside its code and registers it (:mod:`diffsr.core.registry`).
This module builds the discriminated unions of the run config from those registries, so a new
component is one module, and rebuilds them when a plug-in registers later (``plugins:`` in a
YAML config lists modules to import first, see :mod:`diffsr.core.plugins`).

Every model forbids unknown keys, so a typo (or a key the chosen component does not take) is
a user error that names the key and, where one exists, the closest valid key::

    error: unknown key 'codec.layuot' (did you mean 'codec.layout'?)

Presets are YAML files shipped in ``diffsr/presets``; ``load_config`` takes a preset name or
a path, applies ``a.b=c`` overrides (values parsed as YAML scalars) and validates once.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from diffsr.codecs import CODECS, PixelConfig, VAEConfig, WaveletConfig
from diffsr.core.errors import ConfigError
from diffsr.core.plugins import load_plugins, resolve_spec
from diffsr.core.registry import Registry, closest
from diffsr.core.schema import Strict
from diffsr.data.degrade import (
    DEGRADATIONS,
    BicubicConfig,
    BlurNoiseConfig,
    InfraredConfig,
    KSpaceConfig,
    RealESRGANConfig,
)
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
from diffsr.nets import NETS, BaselineNetConfig, UNetConfig
from diffsr.processes import PROCESSES, DDPMConfig, DirectConfig, FlowConfig, RDDMConfig, ResShiftConfig

# the built-in components' config models are re-exported here (they are defined beside each
# component): ``from diffsr.config import FlowConfig, SSIMTerm, HardGateConfig`` keeps working
BUILTIN_MODELS = (
    PixelConfig, WaveletConfig, VAEConfig, FlowConfig, DDPMConfig, ResShiftConfig, RDDMConfig, DirectConfig,
    UNetConfig, BaselineNetConfig, BicubicConfig, BlurNoiseConfig, KSpaceConfig, InfraredConfig, RealESRGANConfig,
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
    "RealESRGANConfig",
    "ResShiftConfig",
    "SSIMTerm",
    "SampleConfig",
    "ScheduleConfig",
    "Stage",
    "StagesSchedule",
    "Strict",
    "TermBase",
    "TrainConfig",
    "UNetConfig",
    "VAEConfig",
    "WaveletConfig",
    "apply_override",
    "drop_inapplicable",
    "format_validation_error",
    "load_config",
    "load_saved_config",
    "parse_override",
    "preset_names",
    "preset_text",
    "save_config",
    "validate",
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


#: the registry behind each union-typed field name (for "unknown process 'flw'" messages)
_KIND_BY_FIELD: dict[str, Registry[Any]] = {
    "codec": CODECS, "process": PROCESSES, "net": NETS, "degradation": DEGRADATIONS, "terms": TERMS,
    "gate": GATES, "weight": SCHEDULES, "base": SCHEDULES,
}


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
    degradation: _degradation_union() = Field(default_factory=BicubicConfig)  # type: ignore[valid-type]
    # auto: dtype range for 8/16-bit images, percentiles for MRI volumes/series, min-max for floats
    normalization: Literal["auto", "dtype", "minmax", "percentile", "window"] = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] | None = None  # CT window (low, high) in file units
    slice_axis: int = Field(2, ge=0, le=2)
    volume_index: int = Field(0, ge=0)
    min_foreground: float = Field(0.05, ge=0, le=1)  # skip volume slices emptier than this
    val_fraction: float = Field(0.1, ge=0, lt=1)
    val_images: int = Field(4, ge=0)
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes preparing the next batches
    cache: bool = True

    @model_validator(mode="after")
    def _patch(self) -> DataConfig:
        if self.patch_size % self.scale:
            raise ValueError(f"patch_size {self.patch_size} is not a multiple of scale {self.scale}")
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
        try:
            return TypeAdapter(self._union()).validate_python(fields)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, self.what)) from None

    def __repr__(self) -> str:
        return f"<{self.what} config: any registered {self.what}>"


#: constructors for a section from keyword arguments (the member is picked by its tag field)
CodecConfig = _SectionUnion("codec", _codec_union)
ProcessConfig = _SectionUnion("process", _process_union)
NetConfig = _SectionUnion("net", _net_union)
DegradationConfig = _SectionUnion("degradation", _degradation_union)
GateConfig = _SectionUnion("gate", _gate_union)
ScheduleConfig = _SectionUnion("weight", _schedule_union)

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
        if last in ("name", "kind") and node.get(last) not in (None, value) and _is_component(parts[:-1]):
            # another component: the options written for the previous one do not apply to it (a loss
            # term keeps what every term has: label, weight, gate, paired_only)
            keep = set(TermBase.model_fields) if parts[-3:-2] == ["terms"] else set()
            for key in [k for k in node if k not in keep]:
                del node[key]
        node[last] = value
    else:
        raise ConfigError(f"--set {'.'.join(parts)}: '{'.'.join(parts[:-1])}' is not a section")


def _is_component(path: list[str]) -> bool:
    """True when ``path`` (e.g. ['codec'], ['losses', 'terms', '0', 'gate']) is a registry-built section."""
    if len(path) >= 2 and path[-2] == "terms" and path[-1].isdigit():
        return True
    return bool(path) and path[-1] in _KIND_BY_FIELD and path[-1] != "terms"


def _index(part: str, node: list[Any], parts: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {'.'.join(parts)}: no item {part} (the list has {len(node)})")
    return int(part)


def _members(annotation: Any) -> dict[str, type[BaseModel]] | None:
    """tag -> model for a registry union annotation (a Union of ``Annotated[M, Tag(name)]``,
    possibly itself inside ``Annotated[..., Discriminator]``)."""
    from pydantic import Tag

    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is not Union:
        return None
    out: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(annotation):
        if typing.get_origin(member) is Annotated:
            model, *meta = typing.get_args(member)
            tag = next((m.tag for m in meta if isinstance(m, Tag)), None)
            if tag is not None:
                out[tag] = model
    return out or None


def _strip(annotation: Any) -> Any:
    """Optional / list / tuple wrappers removed, down to a model or a registry union."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return _strip(args[0]) if args else annotation
    if origin is Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _strip(args[0]) if len(args) == 1 else annotation
    return annotation


def _walk(loc: tuple[Any, ...]) -> tuple[list[str], Any]:
    """(the loc as the user's dotted key, without union tags; what the last part points into).

    Follows ``loc`` from :class:`Config` through fields, list indices and registry unions (whose
    member tags in the loc are dropped from the key: ``losses.terms.0.ssim.windw`` is shown
    as ``losses.terms.0.windw``).
    """
    shown: list[str] = []
    current: Any = Config
    for part in loc:
        members = _members(current)
        if members is not None and isinstance(part, str) and part in members:
            current = members[part]
            continue
        shown.append(str(part))
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = _strip(current.model_fields[part].annotation)
        else:
            current = None
    return shown, current


def _field_names(target: Any) -> list[str]:
    if isinstance(target, type) and issubclass(target, BaseModel):
        return list(target.model_fields)
    members = _members(target)
    names: list[str] = []
    for model in (members or {}).values():
        names += [n for n in model.model_fields if n not in names]
    return names


def _unknown_key(loc: tuple[Any, ...], key: str) -> str:
    """'unknown key ...' with the closest key of the chosen component, or the component that takes it."""
    parent_shown, parent = _walk(loc[:-1])
    bad = str(loc[-1])
    hint = closest(bad, _field_names(parent))
    if hint:
        return f"unknown key '{key}' (did you mean '{'.'.join(parent_shown + [hint])}'?)"
    # a key of another member of the same union (e.g. codec.layout on the pixel codec)
    union_shown, union = _walk(loc[:-2]) if len(loc) >= 2 else ([], None)
    members = _members(union)
    if members and isinstance(loc[-2], str) and loc[-2] in members:
        owners = {tag: closest(bad, list(model.model_fields)) for tag, model in members.items() if tag != loc[-2]}
        owners = {tag: field for tag, field in owners.items() if field}
        if owners:
            tag, field = next(iter(owners.items()))
            field_key = ".".join(parent_shown + [field])
            name = next((p for p in reversed(union_shown) if not p.isdigit()), "")
            what = _KIND_BY_FIELD[name].kind if name in _KIND_BY_FIELD else name or "component"
            return (f"unknown key '{key}' for {what} '{loc[-2]}' "
                    f"({field_key} belongs to '{tag}'{' and others' if len(owners) > 1 else ''})")
    return f"unknown key '{key}'"


def format_validation_error(err: ValidationError, where: str) -> str:
    """The first pydantic error as one line: '<where>: <key>: <message>' with a hint."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    shown, _ = _walk(loc)
    key = ".".join(shown)
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{where}: {_unknown_key(loc, key)}"
    msg = first["msg"]
    if kind == "literal_error":
        got = first.get("input")
        return f"{where}: {key}: {got!r} is not allowed; {msg.lower()}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = next((p for p in reversed(shown) if not p.isdigit()), "")
        registry = _KIND_BY_FIELD.get(field)
        what = registry.kind if registry is not None else "name"
        tag = (first.get("ctx") or {}).get("tag")
        if tag is None or registry is None:
            return f"{where}: {key}: {msg}"
        hint = closest(str(tag), registry.names())
        tail = f" (did you mean '{hint}'?)" if hint else f" (choose from {', '.join(registry.names())})"
        return f"{where}: {key}: unknown {what} '{tag}'{tail}"
    value = first.get("input")
    shown_value = f" (got {value!r})" if not isinstance(value, dict | list) else ""
    return f"{where}: {key}: {msg}{shown_value}"


def validate(data: dict[str, Any], where: str = "config") -> Config:
    """Validate a plain mapping into a Config, turning pydantic errors into ConfigError."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None


def _prepare(data: dict[str, Any], where: str, base: Path | None) -> None:
    """Import the plug-ins a config lists (before validation: they register components).

    File plug-ins are recorded as absolute paths, so a saved run config finds them again.
    """
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"{where}: plugins: expected a list of module names or .py files")
    load_plugins(plugins, base=base, where=f"{where}: plugins")
    if plugins:
        data["plugins"] = [resolve_spec(p, base) for p in plugins]


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a preset name or YAML path (default: the 'demo' preset) and apply overrides.

    The config's ``plugins`` (module names, or .py files relative to the YAML file) are
    imported first, so the components they register can be named in the config.
    """
    data, where = _read_source(source if source is not None else "demo")
    data = copy.deepcopy(data)
    for item in overrides or []:
        parts, value = parse_override(item)
        apply_override(data, parts, value)
    if overrides:
        where = f"{where} (with --set)"
    base = Path(source).parent if source is not None and Path(source).suffix in (".yaml", ".yml") else None
    _prepare(data, where, base)
    return validate(data, where)


def load_saved_config(data: dict[str, Any], where: str) -> Config:
    """Validate a config saved by an earlier run (a checkpoint's ``config.yaml``).

    Its plug-ins are imported, and keys an earlier diffsr version wrote for components that do
    not take them (e.g. ``codec.layout`` of a pixel codec, ``eps`` of an l1 term: they never had
    an effect) are dropped (:func:`drop_inapplicable`).
    """
    data = drop_inapplicable(copy.deepcopy(data))
    _prepare(data, where, None)
    return validate(data, where)


def drop_inapplicable(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the keys a registry section's chosen component does not take.

    Used for saved run configs only: a config a user writes keeps getting an error for such a
    key. Sections: codec, process, net, data.degradation, each loss term and its gate and
    weight (and an adaptive weight's base).
    """

    def trim(section: Any, registry: Registry[Any], default: str | None) -> None:
        if not isinstance(section, dict):
            return
        name = section.get(registry.tag, default)
        if name not in registry or registry.entry(name).config is None:
            return
        keep = registry.entry(name).config.model_fields  # type: ignore[union-attr]
        for key in [k for k in section if k not in keep]:
            del section[key]

    trim(data.get("codec"), CODECS, "pixel")
    trim(data.get("process"), PROCESSES, "flow")
    trim(data.get("net"), NETS, "unet")
    if isinstance(data.get("data"), dict):
        trim(data["data"].get("degradation"), DEGRADATIONS, "bicubic")
    losses = data.get("losses")
    for term in (losses.get("terms") or []) if isinstance(losses, dict) else []:
        trim(term, TERMS, None)
        if isinstance(term, dict):
            trim(term.get("gate"), GATES, "none")
            trim(term.get("weight"), SCHEDULES, "constant")
            if isinstance(term.get("weight"), dict):
                trim(term["weight"].get("base"), SCHEDULES, "constant")
    return data


def save_config(config: Config, path: Path) -> None:
    """Write ``config`` as YAML, atomically."""
    from diffsr.core.atomic import atomic_write_text

    atomic_write_text(path, config.to_yaml())
