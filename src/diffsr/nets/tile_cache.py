"""Resumable tile forwards for exact tiling: remember what a stopped forward had already computed.

Exact tiling (:mod:`diffsr.nets.exact_tiling`) runs every tile up to the k-th whole-image layer
(a GroupNorm, say), stops, and runs it again up to layer k + 1 once that layer's statistics are
known. Without a cache each of these passes recomputes the tile from its input: about
(number of such layers) / 2 forwards per call. :class:`TileCache` makes the passes resumable for
any ``nn.Module``: while a tile runs it records the output of every module call that completes;
when the forward stops, the calls completed inside the modules still running (the "frontier":
``in_conv``, the finished levels, the first convolution of the half-done block, ...) are kept
for that tile. The next pass runs the same Python code, and each of those calls returns its
remembered output at once, so only the new part of the network is computed: about one forward
per tile in all.

Calls are identified by their place in the call tree (the parent call's key, the module, and
how many times the parent had called it before), so shared modules and repeated calls are told
apart. An output that was modified in place after its call (``ReLU(inplace=True)`` on a
convolution's output) is not kept: its version counter tells.

Only what the rest of the forward can still use is kept. At the stop, an output that nothing but
the cache refers to any more (the Python reference count and the storage's use count tell:
``in_conv``'s output once the first level has consumed it, a GroupNorm output once the SiLU
after it ran) is replaced by a shape-only stand-in on the ``meta`` device. Replayed, such a
stand-in only ever reaches calls that are remembered too, so it costs nothing; operations on it
run on ``meta`` (a :class:`~torch.overrides.TorchFunctionMode`). Should one ever reach real
computation (a value derived from it kept in a Python variable, an in-place update of a real
tensor), the tile is recomputed from its input and the cache keeps every output from then on:
the result is always that of the plain forward.

Memory is the price: the kept outputs of every cached tile (the tile's live activations at the
stop, crop-sized, halo included). ``budget`` bytes bound it; tiles that no longer fit recompute
as before, so the result never depends on the budget, only the time.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = ["TileCache"]

Key = tuple[Any, ...]


@dataclass
class _Entry:
    """A completed call: its output, the whole-image-layer calls inside it, its tensors' versions."""

    out: Any
    calls: int
    versions: tuple[int, ...]

    @property
    def placeholder(self) -> bool:
        return isinstance(self.out, Tensor) and self.out.is_meta


@dataclass
class _Frame:
    """A call in progress: its key, how often it called each module, the calls it completed."""

    key: Key
    args: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})
    versions: tuple[int, ...] = ()
    seen: dict[int, int] = field(default_factory=dict)
    done: dict[Key, _Entry] = field(default_factory=dict)


def _tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for item in out for t in _tensors(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _tensors(item)]
    return []


def _versions(out: Any) -> tuple[int, ...]:
    return tuple(t._version for t in _tensors(out))


class _Stale(Exception):
    """A stand-in for a dropped output reached real computation: recompute the tile."""


def _has_meta(items: Any) -> bool:
    for item in items:
        if isinstance(item, Tensor):
            if item.is_meta:
                return True
        elif isinstance(item, tuple | list) and _has_meta(item):
            return True
    return False


def _to_meta(item: Any) -> Any:
    if isinstance(item, Tensor):
        return item if item.is_meta else torch.empty_like(item, device="meta")
    if isinstance(item, tuple | list):
        return type(item)(_to_meta(x) for x in item)
    return item


_INPLACE = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
            "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__setitem__"}


class _Placeholders(TorchFunctionMode):
    """Operations that touch a ``meta`` stand-in run on ``meta`` (free); an in-place update of a
    real tensor from one cannot, and raises :class:`_Stale`."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not (_has_meta(args) or _has_meta(kwargs.values())):
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        inplace = "out" in kwargs or name in _INPLACE or (name.endswith("_") and not name.startswith("__"))
        if inplace and not (args and isinstance(args[0], Tensor) and args[0].is_meta):
            raise _Stale
        return func(*_to_meta(args), **{k: _to_meta(v) for k, v in kwargs.items()})


class TileCache:
    """Per-tile memos of completed module calls, bounded by ``budget`` bytes (see the module docstring).

    Args:
        net: the module whose sub-module calls are remembered (the root call itself never is).
        counter: reads and advances the number of whole-image-layer calls seen in the current
            forward (the exact tiler counts them to know where to stop); a remembered call
            advances it by the number its original run saw.
        budget: bytes of kept outputs over all tiles; 0 disables the cache.
    """

    def __init__(self, net: nn.Module, counter: tuple[Callable[[], int], Callable[[int], None]], budget: int,
                 stop: type[BaseException]) -> None:
        self.modules = [m for m in net.modules() if m is not net]
        self.index = {id(m): i for i, m in enumerate(self.modules)}
        self.get_calls, self.add_calls = counter
        self.budget = max(0, int(budget))
        self.stop_type = stop  # the exception that ends a forward at a whole-image layer
        self.prune = True  # replace outputs nothing refers to by meta stand-ins (off once one was needed)
        self.retries = 0
        self.memos: dict[int, dict[Key, _Entry]] = {}
        self.pending: dict[int, dict[Key, tuple[tuple[Any, ...], dict[str, Any]]]] = {}  # args of unfinished calls
        self.sizes: dict[int, int] = {}
        self.used = 0
        self.peak = 0
        self.dropped: set[int] = set()  # tiles that did not fit: recomputed from then on
        self.exclude: set[int] = set()  # storages not to count (the whole-image inputs)
        self._memo: dict[Key, _Entry] = {}
        self._stack: list[_Frame] = []
        self._kept: dict[Key, _Entry] | None = None  # None: not recording
        self._dead: set[Key] = set()
        self._pending: dict[Key, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._args: dict[Key, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._replaying = False  # the tile's memo holds stand-ins: check what they reach

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def reset(self, inputs: tuple[Tensor, ...]) -> None:
        """Forget every tile (a new evaluation on these whole-image inputs)."""
        self.memos, self.pending, self.sizes, self.used, self.peak, self.dropped = {}, {}, {}, 0, 0, set()
        self.exclude = {t.untyped_storage().data_ptr() for t in inputs}

    # ------------------------------------------------------------------ one tile's forward
    def run(self, tile: int, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` for ``tile``, replaying what its earlier passes computed.

        When ``fn`` stops at a whole-image layer (the ``stop`` exception, which propagates), the
        calls it completed are kept for the next pass if they fit the budget.
        """
        while True:
            self._begin(tile)
            try:
                with _Placeholders() if self._replaying else nullcontext():
                    out = fn(*args)
                if self._replaying and _has_meta(_tensors(out)):
                    raise _Stale
            except self.stop_type:
                self._stop(tile)
                raise
            except Exception:
                self._kept = None
                if not self._replaying:
                    raise
                # a stand-in was needed after all: recompute this tile, keep every output from now on
                # (and forget the other tiles' stand-ins: those tiles recompute once)
                self.prune, self.retries = False, self.retries + 1
                for other in [k for k, memo in self.memos.items() if any(e.placeholder for e in memo.values())]:
                    self._forget(other)
                self._forget(tile)
                continue
            self._kept = None
            self._forget(tile)
            return out

    def _begin(self, tile: int) -> None:
        self._dead = set()
        if not self.enabled or tile in self.dropped:
            self._kept, self._replaying = None, False
            return
        self._memo = self.memos.get(tile, {})
        self._args = self.pending.get(tile, {})
        self._replaying = any(e.placeholder for e in self._memo.values())
        self._stack = [_Frame(())]
        self._kept = {}

    def at_stop(self) -> None:
        """Called just before the stop exception is raised, while the forward's frames still exist:
        find the kept outputs nothing else refers to any more."""
        if self._kept is None or not self.prune:
            return
        # the arguments of the calls still running (e.g. a torch.cat of a dropped output): replayed,
        # they may be computed from stand-ins, and are then taken from here
        self._pending = {f.key: f.args for f in self._stack[1:] if _versions(f.args) == f.versions}
        entries = [(k, e) for frame in self._stack for k, e in frame.done.items()
                   if isinstance(e.out, Tensor) and not e.out.is_meta]
        owners: dict[int, int] = {}
        by_storage: dict[int, set[int]] = {}
        for _, e in entries:
            owners[id(e.out)] = owners.get(id(e.out), 0) + 1
            by_storage.setdefault(e.out.untyped_storage().data_ptr(), set()).add(id(e.out))
        dead_storages = set()
        for ptr, ids in by_storage.items():
            tensor = next(e.out for _, e in entries if id(e.out) in ids)
            # use count: every tensor on the storage, plus the storage object made for the call
            uses = torch._C._storage_Use_Count(tensor.untyped_storage()._cdata) - 1
            if uses == len(ids) and ptr not in self.exclude:
                dead_storages.add(ptr)
        for k, e in entries:
            t = e.out
            # references: the entries holding it, ``t`` here and getrefcount's argument
            if t.untyped_storage().data_ptr() in dead_storages and sys.getrefcount(t) == owners[id(t)] + 2:
                self._dead.add(k)
            del t

    def _stop(self, tile: int) -> None:
        if self._kept is None:
            return
        kept = {**self._kept, **self._stack[0].done}
        self._kept = None
        kept = {k: e for k, e in kept.items() if e.placeholder or _versions(e.out) == e.versions}  # not modified since
        for k in self._dead & kept.keys():
            e = kept[k]
            kept[k] = _Entry(torch.empty_like(e.out, device="meta"), e.calls, ())
        pending, self._dead, self._pending = self._pending, set(), {}
        size = self._bytes([e.out for e in kept.values()] + list(pending.values()))
        self._forget(tile)
        if self.used + size > self.budget:
            self.dropped.add(tile)
            return
        self.memos[tile], self.pending[tile], self.sizes[tile] = kept, pending, size
        self.used += size
        self.peak = max(self.peak, self.used)

    def _forget(self, tile: int) -> None:
        self.used -= self.sizes.pop(tile, 0)
        self.memos.pop(tile, None)
        self.pending.pop(tile, None)

    def _bytes(self, outputs: list[Any]) -> int:
        seen: dict[int, int] = {}
        for t in _tensors(outputs):
            if t.is_meta:
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.exclude:
                seen[ptr] = storage.nbytes()
        return sum(seen.values())

    # ------------------------------------------------------------------ patching
    def _call(self, module: nn.Module, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._kept is None:
            return forward(*args, **kwargs)
        parent = self._stack[-1]
        i = self.index[id(module)]
        n = parent.seen.get(i, 0)
        parent.seen[i] = n + 1
        key = (parent.key, i, n)
        hit = self._memo.get(key)
        if hit is not None:
            self.add_calls(hit.calls)
            parent.done[key] = hit
            return hit.out
        if self._replaying and (_has_meta(args) or _has_meta(kwargs.values())):
            if key not in self._args:
                raise _Stale  # a stand-in reached a call that computes
            args, kwargs = self._args[key]  # an unfinished call at the last stop: its arguments then
        frame = _Frame(key, (args, kwargs), _versions((args, kwargs)))
        self._stack.append(frame)
        start = self.get_calls()
        try:
            out = forward(*args, **kwargs)
        except BaseException:
            if self._kept is not None:
                self._kept.update(frame.done)  # completed inside a call that stopped: the frontier
            raise
        finally:
            self._stack.pop()
        parent.done[key] = _Entry(out, self.get_calls() - start, _versions(out))
        return out

    @contextmanager
    def patched(self) -> Iterator[None]:
        """Route every sub-module call through the cache (on top of any instance-level patch)."""
        if not self.enabled:
            yield
            return
        saved = []
        for m in self.modules:
            had = "forward" in m.__dict__
            forward = m.forward
            saved.append((m, had, forward))
            m.forward = types.MethodType(  # type: ignore[method-assign]
                lambda mod, *a, _f=forward, **k: self._call(mod, _f, *a, **k), m)
        try:
            yield
        finally:
            for m, had, forward in saved:
                if had:
                    m.forward = forward  # type: ignore[method-assign]
                else:
                    del m.forward
