"""One-line messages for config errors: the user's dotted key, did-you-mean hints, the component a key belongs to.

A pydantic error's location runs through the run config's fields, list indices and the member
tags of registry unions (``losses.terms.0.ssim.windw``); the message shows the key as the user
wrote it (``losses.terms.0.windw``) and suggests the closest key of the chosen component, or
names the component that takes a key the chosen one does not (``codec.layout`` belongs to
'wavelet', not 'pixel').
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from diffsr.codecs import CODECS
from diffsr.core.registry import Registry, closest
from diffsr.data.degrade import DEGRADATIONS
from diffsr.losses import GATES, SCHEDULES, TERMS
from diffsr.nets import NETS
from diffsr.processes import PROCESSES

__all__ = ["format_validation_error"]

#: the registry behind each union-typed field name (for "unknown process 'flw'" messages)
_KIND_BY_FIELD: dict[str, Registry[Any]] = {
    "codec": CODECS, "process": PROCESSES, "net": NETS, "degradation": DEGRADATIONS, "terms": TERMS,
    "gate": GATES, "weight": SCHEDULES, "base": SCHEDULES,
}


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


def _walk(loc: tuple[Any, ...], root: Any = None) -> tuple[list[str], Any]:
    """(the loc as the user's dotted key, without union tags; what the last part points into).

    Follows ``loc`` from :class:`Config` through fields, list indices and registry unions (whose
    member tags in the loc are dropped from the key: ``losses.terms.0.ssim.windw`` is shown
    as ``losses.terms.0.windw``).
    """
    shown: list[str] = []
    if root is None:
        from diffsr.config.models import Config

        root = Config
    current: Any = root
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


def _unknown_key(loc: tuple[Any, ...], key: str, root: Any = None, root_field: str = "") -> str:
    """'unknown key ...' with the closest key of the chosen component, or the component that takes it."""
    parent_shown, parent = _walk(loc[:-1], root)
    bad = str(loc[-1])
    hint = closest(bad, _field_names(parent))
    if hint:
        return f"unknown key '{key}' (did you mean '{'.'.join(parent_shown + [hint])}'?)"
    # a key of another member of the same union (e.g. codec.layout on the pixel codec)
    union_shown, union = _walk(loc[:-2], root) if len(loc) >= 2 else ([], None)
    members = _members(union)
    if members and isinstance(loc[-2], str) and loc[-2] in members:
        owners = {tag: closest(bad, list(model.model_fields)) for tag, model in members.items() if tag != loc[-2]}
        owners = {tag: field for tag, field in owners.items() if field}
        if owners:
            tag, field = next(iter(owners.items()))
            field_key = ".".join(parent_shown + [field])
            name = next((p for p in reversed(union_shown) if not p.isdigit()), root_field)
            what = _KIND_BY_FIELD[name].kind if name in _KIND_BY_FIELD else name or "component"
            return (f"unknown key '{key}' for {what} '{loc[-2]}' "
                    f"({field_key} belongs to '{tag}'{' and others' if len(owners) > 1 else ''})")
    return f"unknown key '{key}'"


def format_validation_error(err: ValidationError, where: str, *, root: Any = None, root_field: str = "") -> str:
    """The first pydantic error as one line: '<where>: <key>: <message>' with a hint.

    root: the model or registry union the error's location starts from (default the run config);
    root_field: the config field such a union fills (e.g. "codec"), for messages.
    """
    first = err.errors()[0]
    loc = tuple(first["loc"])
    shown, _ = _walk(loc, root)
    key = ".".join(shown)
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{where}: {_unknown_key(loc, key, root, root_field)}"
    msg = first["msg"]
    if kind == "literal_error":
        got = first.get("input")
        return f"{where}: {key}: {got!r} is not allowed; {msg.lower()}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = next((p for p in reversed(shown) if not p.isdigit()), root_field)
        registry = _KIND_BY_FIELD.get(field)
        what = registry.kind if registry is not None else "name"
        tag = (first.get("ctx") or {}).get("tag")
        if tag is None or registry is None:
            return f"{where}: {key}: {msg}"
        hint = closest(str(tag), registry.names())
        tail = f" (did you mean '{hint}'?)" if hint else f" (choose from {', '.join(registry.names())})"
        return f"{where}: {key + ': ' if key else ''}unknown {what} '{tag}'{tail}"
    value = first.get("input")
    shown_value = f" (got {value!r})" if not isinstance(value, dict | list) else ""
    return f"{where}: {key}: {msg}{shown_value}"
