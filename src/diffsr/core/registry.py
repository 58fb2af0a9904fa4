"""Build-by-name registries: each component registers its config model, factory and capabilities.

A registry maps a short lowercase name (the ``name`` / ``kind`` tag of a config section) to an
:class:`Entry`: the factory, the pydantic config model that describes it, and a few declared
capabilities (pixel or latent space, exact tiling, ...). ``diffsr.config`` builds its
discriminated unions from the registries, so a new component is one module that registers
itself; nothing else is edited::

    CODECS = Registry("codec", capabilities={"exact_tiling": True})

    class WaveletConfig(Strict):
        name: Literal["wavelet"]
        levels: int = 2

    @CODECS.register("wavelet", config=WaveletConfig, exact_tiling=True)
    class WaveletCodec(Codec): ...

    codec = CODECS.build_from(WaveletConfig(name="wavelet"), channels=1)
    CODECS.caps("wavelet").exact_tiling          # True
    CODECS.build("wavelt")                       # ConfigError: unknown codec 'wavelt' (did you mean 'wavelet'?)

Registration is explicit (each package's ``__init__`` imports its modules, a plug-in module
imports the registry it extends); nothing scans a folder at import time, so one broken optional
module cannot break the rest. Listeners (``subscribe``) are told about every registration:
``diffsr.config`` rebuilds its unions when a plug-in registers after it was imported.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from diffsr.core.errors import ConfigError

if TYPE_CHECKING:  # pydantic is only needed where configs are built
    from pydantic import BaseModel

T = TypeVar("T")

__all__ = ["Capabilities", "Entry", "Registry", "closest", "unknown"]


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


class Capabilities(Mapping[str, Any]):
    """A read-only mapping of capability flags, also readable as attributes (``caps.space``)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = MappingProxyType(dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no capability {name!r} (declared: {', '.join(self._values)})") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Capabilities({dict(self._values)})"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component.

    factory: the class or function registered. config: its pydantic config model (None for
    components built only by keyword arguments). caps: its declared capabilities. build: an
    optional ``build(cfg, **context)`` used instead of the registry's default conversion.
    """

    name: str
    factory: Callable[..., T]
    config: type[BaseModel] | None = None
    caps: Capabilities = field(default_factory=lambda: Capabilities({}))
    build: Callable[..., T] | None = None


class Registry(Generic[T]):
    """A name -> :class:`Entry` table with config models and capabilities.

    kind: what the entries are, for messages ("codec", "loss term"). tag: the config field
    that names the entry ("name", or "kind" for gates and schedules). capabilities: the
    capabilities an entry may declare, with their defaults. call: how :meth:`build_from`
    calls a factory: "kwargs" (``factory(**fields, **context)``, the config's fields without
    the tag) or "config" (``factory(cfg, **context)``).
    """

    def __init__(
        self,
        kind: str,
        *,
        tag: str = "name",
        capabilities: Mapping[str, Any] | None = None,
        call: Literal["kwargs", "config"] = "kwargs",
    ) -> None:
        self.kind = kind
        self.tag = tag
        self.call = call
        self.defaults = dict(capabilities or {})
        self._items: dict[str, Entry[T]] = {}
        self._listeners: list[Callable[[], None]] = []
        self.version = 0

    # ------------------------------------------------------------------ registration
    def register(
        self,
        name: str,
        *,
        config: type[BaseModel] | None = None,
        build: Callable[..., T] | None = None,
        **caps: Any,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or factory under ``name`` (with its config model and capabilities)."""
        undeclared = sorted(set(caps) - set(self.defaults))
        if undeclared:
            declared = sorted(self.defaults)
            raise ValueError(f"{self.kind} '{name}': unknown capability {undeclared} (declared: {declared})")
        if config is not None:
            self._check_config(name, config)

        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = Entry(name, factory, config, Capabilities({**self.defaults, **caps}), build)
            self.version += 1
            try:
                for listener in list(self._listeners):
                    listener()
            except BaseException:  # a registration the listeners refuse does not stay half-made
                del self._items[name]
                self.version += 1
                for listener in list(self._listeners):
                    listener()
                raise
            return factory

        return wrap

    def _check_config(self, name: str, config: type[BaseModel]) -> None:
        import typing

        fields = getattr(config, "model_fields", {})
        if self.tag not in fields:
            raise ValueError(f"{self.kind} '{name}': config model {config.__name__} has no '{self.tag}' field")
        tags = typing.get_args(fields[self.tag].annotation)
        if name not in tags:
            raise ValueError(
                f"{self.kind} '{name}': config model {config.__name__}.{self.tag} must be Literal[..., '{name}', ...]"
            )

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in's entry, e.g. between tests); listeners are told."""
        self.entry(name)
        del self._items[name]
        self.version += 1
        for listener in list(self._listeners):
            listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every later registration."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ look-up
    def entry(self, name: str) -> Entry[T]:
        """The entry registered as ``name``; a ConfigError with a hint otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise unknown(self.kind, name, self._items) from None

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; a ConfigError with a hint otherwise."""
        return self.entry(name).factory

    def caps(self, name: str) -> Capabilities:
        """The capabilities of ``name`` (declared defaults filled in)."""
        return self.entry(name).caps

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def entries(self) -> list[Entry[T]]:
        """Entries in registration order."""
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    # ------------------------------------------------------------------ building
    def build(self, name: str, **kwargs: Any) -> T:
        """Instantiate ``name`` with keyword arguments (the factory's own signature)."""
        return self.get(name)(**kwargs)

    def build_from(self, cfg: Any, **context: Any) -> T:
        """Instantiate the entry named by ``cfg``'s tag field from its config model.

        context: what the component needs beyond its config (image channels, the codec, ...).
        """
        entry = self.entry(getattr(cfg, self.tag))
        if entry.build is not None:
            return entry.build(cfg, **context)
        if self.call == "config":
            return entry.factory(cfg, **context)
        fields = cfg.model_dump(exclude={self.tag}) if hasattr(cfg, "model_dump") else dict(cfg)
        return entry.factory(**fields, **context)

    # ------------------------------------------------------------------ configs
    def configs(self, where: Callable[[Entry[T]], bool] | None = None) -> list[type[BaseModel]]:
        """The distinct config models, in registration order (optionally filtered)."""
        out: list[type[BaseModel]] = []
        for entry in self._items.values():
            if entry.config is not None and entry.config not in out and (where is None or where(entry)):
                out.append(entry.config)
        return out

    def config_union(self, where: Callable[[Entry[T]], bool] | None = None, *, default: str | None = None) -> Any:
        """A pydantic annotation: the union of the entries' config models, told apart by ``tag``.

        Every entry is a member under its own name (one model may serve several names, e.g.
        ``l1`` and ``l2``), so an error's location names the entry. ``default``: the entry a
        mapping without the tag field means (e.g. ``net: {size: tiny}`` is a ``unet``).
        """
        from typing import Annotated, Union

        from pydantic import Discriminator, Tag

        members = [e for e in self._items.values() if e.config is not None and (where is None or where(e))]
        if not members:
            raise ValueError(f"no {self.kind} has a config model")
        tag, choices = self.tag, [e.name for e in members]

        def discriminate(value: Any) -> str | None:
            found = value.get(tag, default) if isinstance(value, dict) else getattr(value, tag, default)
            if isinstance(found, str) and found not in choices and not isinstance(value, dict):
                return None
            return found

        tagged = tuple(Annotated[e.config, Tag(e.name)] for e in members)
        if len(tagged) == 1:  # a one-member Union collapses: keep the tag check of its Literal field
            return members[0].config
        return Annotated[Union[tagged], Discriminator(discriminate)]  # noqa: UP007
