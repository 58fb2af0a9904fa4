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

from diffsr.config.loading import (
    PRESET_PACKAGE,
    apply_override,
    drop_inapplicable,
    load_config,
    load_saved_config,
    parse_override,
    preset_names,
    preset_text,
    save_config,
    saved_config_mapping,
    validate,
)
from diffsr.config.messages import format_validation_error
from diffsr.config.models import *  # noqa: F403  (the sections, Config and the built-in component models)
from diffsr.config.models import __all__ as _model_names

__all__ = [
    *_model_names,
    "PRESET_PACKAGE",
    "apply_override",
    "drop_inapplicable",
    "format_validation_error",
    "load_config",
    "load_saved_config",
    "saved_config_mapping",
    "parse_override",
    "preset_names",
    "preset_text",
    "save_config",
    "validate",
]
