"""Checks of command-line values shared by the commands: one ``error:`` line, before any work."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from diffsr.core.errors import DiffsrError

#: the intensity policies --normalization takes (docs/data.md, diffsr.data.normalize)
NORMALIZATIONS = ("auto", "dtype", "minmax", "percentile", "window")
#: the smallest --tile: the config's sample.tile minimum
MIN_TILE = 16


def at_least(value: int | None, minimum: int, option: str) -> None:
    """DiffsrError unless ``value`` is None or >= ``minimum`` (``--steps 0`` is an error, not "the default")."""
    if value is not None and value < minimum:
        raise DiffsrError(f"{option}: must be >= {minimum}, got {value}")


def all_at_least(values: Iterable[int] | None, minimum: int, option: str) -> None:
    """:func:`at_least` for every value of a repeatable option."""
    for value in values or []:
        at_least(value, minimum, option)


def pair(text: str | None, option: str) -> tuple[float, float] | None:
    """'LOW,HIGH' -> (low, high) with low < high; None stays None."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise DiffsrError(f"{option}: '{text}' is not LOW,HIGH (two numbers)") from None
    if not low < high:
        raise DiffsrError(f"{option}: LOW must be below HIGH, got {text}")
    return low, high


def normalization(policy: str | None, percentiles: str | None, window: str | None
                  ) -> tuple[str | None, tuple[float, float] | None, tuple[float, float] | None]:
    """(policy, percentiles, window) from --normalization / --percentiles / --window, checked."""
    if policy is not None and policy not in NORMALIZATIONS:
        raise DiffsrError(f"--normalization: '{policy}' is not one of {', '.join(NORMALIZATIONS)}")
    pct = pair(percentiles, "--percentiles")
    if pct is not None and not 0 <= pct[0] < pct[1] <= 100:
        raise DiffsrError(f"--percentiles: must satisfy 0 <= LOW < HIGH <= 100, got {percentiles}")
    return policy, pct, pair(window, "--window")


def out_not_inside(out: Path, folder: Path | None, option: str) -> None:
    """DiffsrError when --out is ``folder`` (e.g. --data) or inside it: the outputs would become inputs."""
    if folder is None or not folder.is_dir():
        return
    out_r, root = out.resolve(), folder.resolve()
    if out_r == root or root in out_r.parents:
        raise DiffsrError(f"--out {out}: is inside {option} {folder}; its files would be read as inputs next "
                          "time: choose another --out")
