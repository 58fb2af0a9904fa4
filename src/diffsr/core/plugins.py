"""Plug-ins: modules that register components (a loss term, a gate, a codec ...) from outside diffsr.

A config lists them under ``plugins:``; each entry is a module name importable from
``sys.path`` (``my_lab.losses``) or a path to a ``.py`` file (relative paths are taken from the
YAML file's folder). Importing the module runs its ``@TERMS.register(...)`` (etc.) decorators,
so the config can then name the new component. A file is imported once per process, however
many configs list it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from diffsr.core.errors import ConfigError

__all__ = ["forget_plugin", "is_file_spec", "load_plugin", "load_plugins", "resolve_spec"]

_FILES: dict[Path, ModuleType] = {}


def is_file_spec(spec: str) -> bool:
    """True when ``spec`` names a ``.py`` file rather than an importable module."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve_spec(spec: str, base: Path | None = None) -> str:
    """``spec`` as a saved config should record it: a file as an absolute path, a module name as is."""
    if not is_file_spec(spec):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path.resolve())


def load_plugin(spec: str, *, base: Path | None = None, where: str = "plugins") -> ModuleType:
    """Import one plug-in (a module name or a ``.py`` path); a ConfigError (one line) when it fails."""
    try:
        if is_file_spec(spec):
            path = Path(resolve_spec(spec, base))
            if path in _FILES:
                return _FILES[path]
            if not path.is_file():
                raise ConfigError(f"{where}: {spec}: no such file")
            name = f"diffsr_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise ConfigError(f"{where}: {spec}: not an importable Python file")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            _FILES[path] = module
            return module
        return importlib.import_module(spec)
    except ConfigError:
        raise
    except (ImportError, SyntaxError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"{where}: cannot import '{spec}' ({type(err).__name__}: {first})") from None


def forget_plugin(spec: str, *, base: Path | None = None) -> None:
    """Forget a file plug-in (its next load imports it again); its registrations stay unless unregistered."""
    if is_file_spec(spec):
        module = _FILES.pop(Path(resolve_spec(spec, base)), None)
        if module is not None:
            sys.modules.pop(module.__name__, None)


def load_plugins(specs: Iterable[str], *, base: Path | None = None, where: str = "plugins") -> list[ModuleType]:
    """Import every plug-in in ``specs`` (see :func:`load_plugin`)."""
    return [load_plugin(spec, base=base, where=where) for spec in specs]
