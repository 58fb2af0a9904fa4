"""Build-by-name registries with "did you mean" errors.

Registration is explicit (each package's ``__init__`` imports its modules); nothing scans a
folder at import time, so one broken optional module cannot break the rest.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from diffsr.core.errors import ConfigError

T = TypeVar("T")


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest valid name to ``name`` (for "did you mean" hints), or None."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """A ConfigError for an unknown name, with the closest valid one when there is one."""
    choices = sorted(choices)
    hint = closest(name, choices)
    tail = f" (did you mean '{hint}'?)" if hint else f" (choose from {', '.join(choices)})"
    return ConfigError(f"unknown {kind} '{name}'{tail}")


class Registry(Generic[T]):
    """A name -> factory table: ``CODECS.register("wavelet")(WaveletCodec)``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or factory under ``name``."""

        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = factory
            return factory

        return wrap

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; a ConfigError with a hint otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise unknown(self.kind, name, self._items) from None

    def build(self, name: str, **kwargs: Any) -> T:
        """Instantiate ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
