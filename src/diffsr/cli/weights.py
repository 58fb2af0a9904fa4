"""``diffsr weights fetch|list``: pre-fetch perceptual weights into the torch hub cache, show where they resolve."""

from __future__ import annotations

from diffsr.core.errors import ConfigError, DiffsrError

__all__ = ["run_fetch", "run_list"]


def run_fetch(names: list[str]) -> str:
    """Fetch each named weight set (lpips-alex, lpips-vgg) into the cache; one line per file."""
    from diffsr.losses.perceptual import FETCHABLE, fetch_lpips

    unknown = [n for n in names if n not in FETCHABLE]
    if unknown or not names:
        raise DiffsrError(f"weights fetch: {', '.join(unknown) or 'nothing to fetch'}: choose from "
                          f"{', '.join(FETCHABLE)}")
    lines = []
    for name in names:
        lin, backbone = fetch_lpips(FETCHABLE[name])  # type: ignore[arg-type]
        lines += [f"{name} backbone: {backbone}", f"{name} linear layers: {lin}"]
    return "\n".join(lines)


def run_list() -> str:
    """Where each known weight set resolves now (nothing is downloaded)."""
    import os

    from diffsr.losses.perceptual import FETCHABLE, _resolve_backbone, _resolve_lin, weights_cache

    previous = os.environ.get("DIFFSR_OFFLINE")
    os.environ["DIFFSR_OFFLINE"] = "1"  # a listing must not download
    lines = [f"cache: {weights_cache()}"]
    try:
        for name, net in FETCHABLE.items():
            parts = []
            for what, resolve in (("backbone", _resolve_backbone), ("linear layers", _resolve_lin)):
                try:
                    parts.append(f"{what} {resolve(net, None)}")  # type: ignore[arg-type]
                except ConfigError:
                    parts.append(f"{what} missing (diffsr weights fetch {name})")
            lines.append(f"{name}: " + ", ".join(parts))
    finally:
        if previous is None:
            os.environ.pop("DIFFSR_OFFLINE", None)
        else:
            os.environ["DIFFSR_OFFLINE"] = previous
    return "\n".join(lines)
