"""Training data: normalised 2-D images, patches, LR made on the fly.

Every file is read (:mod:`diffsr.data.io`), normalised to [0, 1] with one
:class:`~diffsr.data.normalize.Intensity` per file or volume, converted to the configured
number of channels and split into 2-D images (a volume gives its slices, skipping slices whose
foreground fraction, the share of pixels above 0.05, is below ``min_foreground``); see
:mod:`diffsr.data.loading`, which evaluation shares.

:class:`SRDataset` yields dicts (see ``__getitem__``) of patches with a validity mask; the LR
image is made from the HR patch by a :class:`~diffsr.data.degrade.Degradation` (synthetic
pairs), read from an LR folder (real pairs), or is all there is (unpaired LR, ``paired`` False).
Randomness of item ``i`` in epoch ``e`` comes from a generator seeded by (seed, e, i), so a
resumed run sees the same crops and degradations. Evaluation items (:class:`EvalItem`,
:func:`load_eval_items`, :func:`is_rgb`) live in :mod:`diffsr.data.eval_items` and are
re-exported here. See docs/data.md.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from diffsr.core.errors import DataError
from diffsr.data.degrade import BicubicDegradation, Degradation, build_degradation

# the imports marked F401 are re-exports, unused here: code and tests import them from
# diffsr.data.datasets, which held evaluation and loading too before they got modules
from diffsr.data.eval_items import EvalItem, is_rgb, load_eval_items  # noqa: F401
from diffsr.data.io import list_inputs, read
from diffsr.data.loading import (
    FOREGROUND_LEVEL,  # noqa: F401
    LUMA,  # noqa: F401
    MIN_LR_SIDE,
    _generator,
    _load,
    _Loaded,
    _slice_name,
    check_size,
    foreground_fraction,
    to_channels,
)
from diffsr.data.normalize import Intensity

#: the ``data`` section of a run config (:class:`diffsr.config.DataConfig`; read by attribute)
DataConfig = Any

log = logging.getLogger(__name__)

SAMPLES = Path(__file__).parent / "samples"


# ----------------------------------------------------------------------------- helpers


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in [0, high] (inclusive)."""
    return int(torch.randint(high + 1, (1,), generator=generator)) if high > 0 else 0


def _pad_to(x: Tensor, h: int, w: int) -> Tensor:
    """Reflect-pad (C, H, W) on the bottom/right to at least (h, w) (replicate if too small)."""
    ph, pw = max(0, h - x.shape[-2]), max(0, w - x.shape[-1])
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x[None], (0, pw, 0, ph), mode=mode)[0]


def _augment(tensors: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """One random element of the dihedral group (flips and transposition) for all tensors."""
    flips = torch.randint(2, (3,), generator=generator).tolist()
    out = []
    for t in tensors:
        if flips[0]:
            t = t.flip(-1)
        if flips[1]:
            t = t.flip(-2)
        if flips[2]:
            t = t.transpose(-2, -1)
        out.append(t.contiguous())
    return out


# ----------------------------------------------------------------------------- items


@dataclass(frozen=True)
class SliceRef:
    """Where a 2-D image comes from, for datasets that do not cache decoded volumes."""

    path: str
    index: int
    intensity: Intensity
    channels: int
    slice_axis: int = 2
    volume_index: int | None = None
    nan_policy: str = "error"


@functools.lru_cache(maxsize=2)
def _load_unit(path: str, intensity: Intensity, channels: int, slice_axis: int, volume_index: int | None,
               nan_policy: str) -> np.ndarray:
    record = read(path, slice_axis=slice_axis, volume_index=volume_index, nan_policy=nan_policy)  # type: ignore[arg-type]
    return to_channels(intensity.forward(record.array), channels).astype(np.float32)


def _resolve(ref: SliceRef | None) -> np.ndarray | None:
    if ref is None:
        return None
    unit = _load_unit(ref.path, ref.intensity, ref.channels, ref.slice_axis, ref.volume_index, ref.nan_policy)
    return unit[ref.index]


@dataclass
class ImageItem:
    """One 2-D training image: HR (C, H, W) in [0, 1] and/or LR (C, h, w); arrays or references.

    hr only: synthetic pairs (LR made by the degradation). hr and lr: a real pair (HR = scale x
    LR). lr only: unpaired LR. ``hr_ref``/``lr_ref`` replace the arrays when decoded volumes
    are not cached (they are re-read on access, two volumes kept per process).
    """

    name: str
    hr: np.ndarray | None = None
    lr: np.ndarray | None = None
    hr_ref: SliceRef | None = None
    lr_ref: SliceRef | None = None

    def arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(hr, lr) arrays, loading references if needed."""
        hr = self.hr if self.hr is not None else _resolve(self.hr_ref)
        lr = self.lr if self.lr is not None else _resolve(self.lr_ref)
        return hr, lr

    @property
    def has_hr(self) -> bool:
        return self.hr is not None or self.hr_ref is not None

    @property
    def has_lr(self) -> bool:
        return self.lr is not None or self.lr_ref is not None


# ----------------------------------------------------------------------------- dataset


class SRDataset(Dataset):
    """Patches for training (random) or validation (deterministic centre crops).

    Each item is a dict of tensors in [0, 1]:
    ``hr`` (C, P, P), ``lr`` (C, P/s, P/s), ``lr_up`` (C, P, P) (``degradation.upsample`` of
    ``lr``), ``mask`` (1, P, P) (1 on real pixels, 0 on padding), ``paired`` (bool tensor: an
    HR exists), ``name`` (str), ``index`` (int). Unpaired items have ``hr = lr_up`` as a
    placeholder. Images smaller than the patch are reflect-padded (mask 0 there).

    train: random crops (any offset for synthetic pairs, LR-grid offsets for real pairs and
    unpaired LR) and, with ``augment``, a random flip / transposition; the generator for item
    ``i`` in epoch ``e`` is seeded by (seed, e, i) (:meth:`set_epoch`). Validation: the centre
    crop of side min(side, max_size) rounded down to a multiple of the scale (sizes may differ:
    use :func:`collate_pad`), generator seeded by (seed, 0, i) whatever the epoch.
    repeats: the dataset length is ``repeats * len(items)`` (item i uses image i % len(items)).
    """

    def __init__(
        self,
        items: Sequence[ImageItem],
        *,
        scale: int,
        patch_size: int,
        degradation: Degradation | None = None,
        train: bool = True,
        seed: int = 0,
        max_size: int | None = None,
        augment: bool | None = None,
        repeats: int = 1,
    ) -> None:
        if patch_size % scale:
            raise ValueError(f"patch_size {patch_size} is not a multiple of scale {scale}")
        self.items = list(items)
        self.scale, self.patch_size = scale, patch_size
        self.degradation = degradation if degradation is not None else BicubicDegradation(scale)
        if self.degradation.scale != scale:
            raise ValueError(f"degradation scale {self.degradation.scale} != dataset scale {scale}")
        self.train, self.seed = train, seed
        self.max_size = max_size if max_size is not None else patch_size
        self.augment = train if augment is None else augment
        self.repeats = max(1, repeats)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops and degradations :meth:`__getitem__` returns."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        item = self.items[index % len(self.items)]
        generator = _generator(self.seed, self.epoch if self.train else 0, index)
        hr_np, lr_np = item.arrays()
        s = self.scale
        hr = torch.from_numpy(np.ascontiguousarray(hr_np, dtype=np.float32)) if hr_np is not None else None
        lr = torch.from_numpy(np.ascontiguousarray(lr_np, dtype=np.float32)) if lr_np is not None else None

        if hr is not None and lr is None:  # synthetic pair: crop HR, degrade
            hr, mask, _ = self._crop(hr, generator)
            if self.augment:
                hr, mask = _augment([hr, mask], generator)
            lr = self.degradation(hr[None], generator)[0]
            paired = True
        elif hr is not None and lr is not None:  # real pair: crop on the LR grid
            lr, lr_mask, (y0, x0) = self._crop(lr, generator, lr_grid=True)
            hr = hr[:, y0 * s : (y0 + lr.shape[-2]) * s, x0 * s : (x0 + lr.shape[-1]) * s]
            hr = _pad_to(hr, lr.shape[-2] * s, lr.shape[-1] * s)
            mask = F.interpolate(lr_mask[None], scale_factor=s, mode="nearest")[0]
            if self.augment:
                hr, lr, mask = _augment([hr, lr, mask], generator)
            paired = True
        else:  # unpaired LR
            assert lr is not None
            lr, lr_mask, _ = self._crop(lr, generator, lr_grid=True)
            mask = F.interpolate(lr_mask[None], scale_factor=s, mode="nearest")[0]
            if self.augment:
                lr, mask = _augment([lr, mask], generator)
            paired = False
        lr = lr.clamp(0.0, 1.0)
        lr_up = self.degradation.upsample(lr[None])[0]
        if not paired:
            hr = lr_up.clone()
        assert hr is not None
        return {
            "hr": hr.clamp(0.0, 1.0),
            "lr": lr,
            "lr_up": lr_up,
            "mask": mask,
            "paired": torch.tensor(paired),
            "name": item.name,
            "index": index,
        }

    def _crop(self, x: Tensor, generator: torch.Generator, *, lr_grid: bool = False
              ) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """(patch, mask (1, ., .), offset) of ``x`` (C, H, W): random (train) or centre (val).

        Train patches are P x P (HR) or P/s x P/s (``lr_grid``), reflect-padded when ``x`` is
        smaller; validation crops are at most ``max_size`` (HR units), a multiple of the scale.
        """
        s = self.scale
        h, w = x.shape[-2:]
        if self.train:
            side = self.patch_size // s if lr_grid else self.patch_size
            th, tw = side, side
            y0, x0 = _randint(h - th, generator), _randint(w - tw, generator)
        else:
            limit = self.max_size // s if lr_grid else self.max_size
            unit = 1 if lr_grid else s
            th = (min(h, limit) // unit) * unit
            tw = (min(w, limit) // unit) * unit
            y0, x0 = (h - th) // 2, (w - tw) // 2
        y0, x0 = max(0, y0), max(0, x0)
        patch = x[:, y0 : y0 + th, x0 : x0 + tw]
        mask = torch.zeros(1, th, tw)
        mask[:, : patch.shape[-2], : patch.shape[-1]] = 1.0
        return _pad_to(patch, th, tw), mask, (y0, x0)


def collate_pad(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items of different sizes: zero-pad bottom/right to the batch maximum (mask 0 there).

    The scale is the ratio of ``hr`` to ``lr`` height of the first item. Strings become lists.
    """
    s = batch[0]["hr"].shape[-2] // batch[0]["lr"].shape[-2]
    hh = max(b["hr"].shape[-2] for b in batch)
    ww = max(b["hr"].shape[-1] for b in batch)
    hh, ww = math.ceil(hh / s) * s, math.ceil(ww / s) * s

    def pad(t: Tensor, h: int, w: int) -> Tensor:
        return F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]))

    out: dict[str, Any] = {}
    for key in ("hr", "lr_up", "mask"):
        out[key] = torch.stack([pad(b[key], hh, ww) for b in batch])
    out["lr"] = torch.stack([pad(b["lr"], hh // s, ww // s) for b in batch])
    out["paired"] = torch.stack([torch.as_tensor(b["paired"]) for b in batch])
    for key in batch[0]:
        if key not in out:
            values = [b[key] for b in batch]
            out[key] = torch.as_tensor(values) if isinstance(values[0], int) else values
    return out


# ----------------------------------------------------------------------------- loading


def _items(
    loaded: _Loaded,
    slices: list[int],
    *,
    scale: int,
    cache: bool,
    read_args: dict[str, Any],
    lr: _Loaded | None = None,
    lr_only: bool = False,
) -> list[ImageItem]:
    items = []
    for i in slices:
        name = _slice_name(loaded, i)
        h, w = loaded.unit.shape[-2:]
        if lr_only:
            if min(h, w) < MIN_LR_SIDE:
                raise DataError(f"{loaded.path}: LR image {h}x{w} (HxW) is smaller than {MIN_LR_SIDE} pixels")
        else:
            check_size(str(loaded.path) + ("" if loaded.unit.shape[0] == 1 else f" slice {i}"), h, w, scale)
        if lr is not None:
            lh, lw = lr.unit.shape[-2:]
            if (h, w) != (lh * scale, lw * scale) or lr.unit.shape[0] != loaded.unit.shape[0]:
                raise DataError(
                    f"{loaded.path}: HR {loaded.unit.shape[0]}x{h}x{w} is not {scale} x the LR "
                    f"{lr.unit.shape[0]}x{lh}x{lw} of {lr.path}"
                )

        def ref(src: _Loaded, index: int) -> SliceRef:
            return SliceRef(str(src.path), index, src.intensity, read_args["channels"],
                            read_args["slice_axis"], read_args["volume_index"], read_args["nan_policy"])

        if cache:
            hr_arr = None if lr_only else loaded.unit[i]
            lr_arr = loaded.unit[i] if lr_only else (lr.unit[i] if lr is not None else None)
            items.append(ImageItem(name, hr=hr_arr, lr=lr_arr))
        else:
            hr_ref = None if lr_only else ref(loaded, i)
            lr_ref = ref(loaded, i) if lr_only else (ref(lr, i) if lr is not None else None)
            items.append(ImageItem(name, hr_ref=hr_ref, lr_ref=lr_ref))
    return items


def _split(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, val) by file: a seeded choice of max(1, round(fraction n)) files (n > 1)."""
    n = len(paths)
    if fraction <= 0 or n < 2:
        return paths, []
    n_val = min(n - 1, max(1, round(fraction * n)))
    chosen = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    train = [p for i, p in enumerate(paths) if i not in chosen]
    return train, [p for i, p in enumerate(paths) if i in chosen]


def _input_paths(cfg: DataConfig, train_root: Path, seed: int) -> tuple[list[Path], list[Path], list[Path]]:
    """(train, val, split) inputs: ``cfg.val`` or the sample val set, else val files split from train."""
    train_paths = list_inputs(train_root)
    if cfg.val:
        val_paths, split_paths = list_inputs(cfg.val), []
    elif cfg.train is None:
        val_paths, split_paths = list_inputs(SAMPLES / "val"), []
    else:
        train_paths, split_paths = _split(train_paths, cfg.val_fraction, seed)
        val_paths = []
    return train_paths, val_paths, split_paths


def _load_group(paths: list[Path], load_args: dict[str, Any], lr_dir: str | None
                ) -> list[tuple[_Loaded, _Loaded | None]]:
    """Each file loaded, with its LR partner of the same name in ``lr_dir`` (if given) normalised
    by the HR's intensity mapping."""
    out = []
    for p in paths:
        loaded = _load(p, **load_args)
        lr = None
        if lr_dir:
            lr_path = Path(lr_dir) / p.name
            if not lr_path.exists():
                raise DataError(f"{lr_path}: no LR file for {p} in lr_dir")
            lr = _load(lr_path, **{**load_args, "min_foreground": 0.0}, intensity=loaded.intensity)
        out.append((loaded, lr))
    return out


def build_datasets(cfg: DataConfig, *, seed: int = 0) -> tuple[SRDataset, SRDataset]:
    """(train, val) datasets from a :class:`~diffsr.config.DataConfig`.

    - ``cfg.train`` None: the built-in samples (``diffsr/data/samples/train``, val from
      ``samples/val`` unless ``cfg.val`` is set).
    - ``cfg.val`` None: a seeded split of the train files (``val_fraction``, at least one file
      when there are two or more); a single volume is split by slices instead (the last
      ``val_fraction`` of its kept slices, a contiguous block, so neighbours do not leak).
    - ``cfg.lr_dir``: real pairs: the LR file with the same name for each train file (also for
      val files split from train); the LR is normalised with its HR's intensity mapping.
    - ``cfg.unpaired_dir``: LR-only images added to the train set (``paired`` False).
    The train set repeats its images so that an epoch holds at least one batch; the val set
    uses centre crops of side up to 2 x patch_size. ``cfg.cache`` keeps decoded volumes.
    """
    scale, channels = int(cfg.scale), int(cfg.channels)
    read_args = {"channels": channels, "slice_axis": cfg.slice_axis, "volume_index": cfg.volume_index,
                 "nan_policy": "error"}
    load_args: dict[str, Any] = {
        "channels": channels,
        "normalization": None if cfg.normalization == "auto" else cfg.normalization,
        "percentiles": tuple(cfg.percentiles),
        "window": tuple(cfg.window) if cfg.window is not None else None,
        "slice_axis": cfg.slice_axis,
        "volume_index": cfg.volume_index,
        "min_foreground": cfg.min_foreground,
    }
    train_root = Path(cfg.train) if cfg.train else SAMPLES / "train"
    train_paths, val_paths, split_paths = _input_paths(cfg, train_root, seed)
    common = {"scale": scale, "cache": cfg.cache, "read_args": read_args}
    train_items: list[ImageItem] = []
    val_items: list[ImageItem] = []
    train_loaded = _load_group(train_paths, load_args, cfg.lr_dir)
    if not split_paths and not val_paths and cfg.val_fraction > 0 and len(train_loaded) == 1:
        loaded, lr = train_loaded[0]
        n_val = min(len(loaded.slices) - 1, max(1, round(cfg.val_fraction * len(loaded.slices))))
        if n_val >= 1:
            train_items += _items(loaded, loaded.slices[:-n_val], lr=lr, **common)
            val_items += _items(loaded, loaded.slices[-n_val:], lr=lr, **common)
            train_loaded = []
    for loaded, lr in train_loaded:
        train_items += _items(loaded, loaded.slices, lr=lr, **common)
    for loaded, lr in _load_group(split_paths, load_args, cfg.lr_dir):
        val_items += _items(loaded, loaded.slices, lr=lr, **common)
    for loaded, _ in _load_group(val_paths, load_args, None):
        val_items += _items(loaded, loaded.slices, **common)
    if cfg.unpaired_dir:
        unpaired_args = {**load_args, "min_foreground": 0.0}
        for p in list_inputs(cfg.unpaired_dir):
            loaded = _load(p, **unpaired_args)
            train_items += _items(loaded, loaded.slices, lr_only=True, **common)
    if not train_items:
        raise DataError(f"{train_root}: no training images")
    degradation = build_degradation(cfg.degradation, scale)
    repeats = max(1, math.ceil(cfg.batch_size / len(train_items)))
    train = SRDataset(train_items, scale=scale, patch_size=cfg.patch_size, degradation=degradation,
                      train=True, seed=seed, repeats=repeats)
    val = SRDataset(val_items, scale=scale, patch_size=cfg.patch_size, degradation=degradation,
                    train=False, seed=seed, max_size=2 * cfg.patch_size)
    log.info("data: %d train images (x%d repeats), %d val images, scale %d, degradation %s",
             len(train_items), repeats, len(val_items), scale, degradation.name)
    return train, val


__all__ = [
    "EvalItem",
    "ImageItem",
    "SRDataset",
    "SliceRef",
    "build_datasets",
    "check_size",
    "collate_pad",
    "foreground_fraction",
    "load_eval_items",
    "to_channels",
]
