"""Core: errors, registries and shape checks shared by every layer."""

from diffsr.core.errors import CheckpointError, ConfigError, DataError, DiffsrError
from diffsr.core.registry import Registry, closest
from diffsr.core.shapes import check_image, check_mask

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DiffsrError",
    "Registry",
    "check_image",
    "check_mask",
    "closest",
]
