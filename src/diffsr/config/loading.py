"""Loading configs: presets, YAML files, ``--set`` overrides, plug-ins, and configs saved by runs."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from diffsr.codecs import CODECS
from diffsr.config.messages import _KIND_BY_FIELD, format_validation_error
from diffsr.config.models import Config
from diffsr.core.errors import CheckpointError, ConfigError
from diffsr.core.plugins import load_plugins, resolve_spec
from diffsr.core.registry import Registry, closest
from diffsr.data.degrade import DEGRADATIONS
from diffsr.losses import GATES, SCHEDULES, TERMS, TermBase
from diffsr.nets import NETS
from diffsr.processes import PROCESSES

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


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that gives one key twice (YAML would silently keep the last)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (two ``train:`` blocks: the
    first would be dropped without a word), naming the key, its section and both line numbers.
    Keys merged in with ``<<: *anchor`` may be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if first is not None:
                raise DuplicateKeyError(f"duplicate key '{key}' (lines {first} and {line}); YAML keeps only the last")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKeyError` for a key given twice in a mapping."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


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
        data = safe_load_unique(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"{where}: {err}") from None
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


def saved_config_mapping(text: str, where: str) -> dict[str, Any]:
    """The mapping of a checkpoint's ``config.yaml`` text; CheckpointError naming ``where`` when it is
    not YAML or not a mapping (a damaged checkpoint, not a user's config)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raise CheckpointError(f"{where}: invalid YAML") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: not a config mapping")
    return raw


def load_saved_config(data: dict[str, Any], where: str, base: Path | None = None) -> Config:
    """Validate a config saved by an earlier run (a checkpoint's ``config.yaml``).

    Its plug-ins are imported, and keys an earlier diffsr version wrote for components that do
    not take them (e.g. ``codec.layout`` of a pixel codec, ``eps`` of an l1 term: they never had
    an effect) are dropped (:func:`drop_inapplicable`). base: the folder of a model folder's
    config (``diffsr export``): its relative file plug-ins and a relative ``codec.path`` (the VAE
    shipped in the folder) are taken from there.
    """
    data = drop_inapplicable(copy.deepcopy(data))
    codec = data.get("codec")
    if base is not None and isinstance(codec, dict) and isinstance(codec.get("path"), str):
        path = Path(codec["path"]).expanduser()
        if not path.is_absolute() and (base / path).exists():
            codec["path"] = str((base / path).resolve())
    _prepare(data, where, base)
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
