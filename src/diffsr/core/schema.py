"""The base of every config model: unknown keys are errors, assignment is validated.

Component config models (a codec's, a loss term's, a gate's ...) live beside the component
and derive from :class:`Strict`; ``diffsr.config`` assembles them into the run config.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    """Base config model: unknown keys are errors; assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
