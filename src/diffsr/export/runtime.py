"""Run an exported ONNX graph with onnxruntime (CPU), with the I/O and tiling of the PyTorch path.

:class:`OnnxModel` reads the graph's metadata (:mod:`diffsr.export.onnx`): the scale, the channel
count, the noise input's shape and the run config (``data.*`` for reading and writing files as
the run does, ``sample.*`` for the seed and the tiles). The noise is drawn exactly as the PyTorch
sampler draws it (``torch.randn`` from a CPU generator seeded with ``sample.seed``), so
``diffsr sr --onnx`` matches ``diffsr sr --ckpt`` of the same one-step model to float rounding.

Tiles: the graph maps LR to SR, so a large image is cut on the LR grid (like the feed-forward
baselines) into overlapping tiles of ``tile / scale`` LR pixels (``tile`` and ``overlap`` are HR
pixels, as everywhere), each sampled from its slice of one noise field for the whole image, and
blended with the raised-cosine window of :func:`diffsr.data.tiling.tiled_apply` ("blend" mode;
exact tiling needs the PyTorch model).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from diffsr.config import Config, validate
from diffsr.core.errors import DiffsrError

__all__ = ["OnnxModel"]

log = logging.getLogger(__name__)


class OnnxModel:
    """An exported one-step graph (``model.onnx``) ready to super-resolve, on the CPU."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "model.onnx"
        if not path.is_file():
            raise DiffsrError(f"{path}: no such ONNX file")
        try:
            import onnxruntime as ort
        except ImportError:
            raise DiffsrError("--onnx needs onnxruntime: pip install 'diffsr[deploy]'") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own classes for a file it cannot read
            first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise DiffsrError(f"{path}: not a readable ONNX model ({first})") from None
        self.path = path
        self.meta: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if "diffsr_scale" not in self.meta:
            raise DiffsrError(f"{path}: not exported by diffsr (no diffsr_scale metadata); use diffsr export --onnx")
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.scale = int(self.meta["diffsr_scale"])
        self.channels = int(self.meta["diffsr_channels"])
        self.latent_channels = int(self.meta["diffsr_latent_channels"])
        self.downsample = int(self.meta["diffsr_downsample"])
        self.config = _config(self.meta.get("diffsr_config", ""), path)

    def noise(self, lr_shape: tuple[int, ...], seed: int) -> Tensor:
        """The standard-normal noise input for an LR batch, drawn as the PyTorch sampler draws it."""
        b, _, h, w = lr_shape
        d = self.downsample
        gen = torch.Generator().manual_seed(seed)
        shape = (b, self.latent_channels, -(-h * self.scale // d), -(-w * self.scale // d))
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    def run(self, lr: Tensor, noise: Tensor | None = None) -> Tensor:
        """One graph call: LR (B, C, h, w) (+ noise) -> SR (B, C, h s, w s)."""
        feed = {"lr": np.ascontiguousarray(lr.detach().cpu().numpy(), dtype=np.float32)}
        if "noise" in self.inputs:
            if noise is None:
                raise ValueError("this graph needs its noise input (OnnxModel.noise)")
            feed["noise"] = np.ascontiguousarray(noise.cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, feed)[0])

    def super_resolve(self, lr: Tensor, *, steps: int | None = None, tile: int | None = None,
                      overlap: int | None = None, seed: int | None = None) -> Tensor:
        """LR (B, C, h, w) in [0, 1] -> SR (B, C, h s, w s), as :func:`diffsr.super_resolve` for the
        PyTorch model (channels matched the same way; ``tile`` / ``overlap`` in HR pixels)."""
        from diffsr.sampling.infer import match_channels

        if steps not in (None, 1):
            raise DiffsrError(f"--steps {steps}: an ONNX graph samples in one step")
        lr = lr.detach().float().cpu()
        if lr.shape[1] != self.channels:
            return match_channels(lambda x: self.super_resolve(x, tile=tile, overlap=overlap, seed=seed), lr,
                                  self.channels, "input")
        cfg = self.config.sample
        tile = tile if tile is not None else cfg.tile
        seed = cfg.seed if seed is None else seed
        h, w = lr.shape[-2:]
        s = self.scale
        if not tile or (h * s <= tile and w * s <= tile):
            return self.run(lr, self.noise(tuple(lr.shape), seed) if "noise" in self.inputs else None)
        return self._tiled(lr, tile, cfg.overlap if overlap is None else overlap, seed)

    def _tiled(self, lr: Tensor, tile: int, overlap: int, seed: int) -> Tensor:
        from diffsr.data.tiling import tiled_apply

        if self.config.sample.tile_mode == "exact":
            raise DiffsrError("--tile-mode exact: an ONNX graph is tiled in blend mode only; use the PyTorch model "
                              "(--ckpt) for exact tiles")
        s, d = self.scale, self.downsample
        multiple = d // math.gcd(d, s)  # LR offsets whose HR offsets fall on the latent grid
        tile_lr, overlap_lr = max(multiple, tile // s), overlap // s
        if "noise" not in self.inputs:
            return tiled_apply(self.run, lr, tile=tile_lr, overlap=overlap_lr, scale=s)
        b, c, h, w = lr.shape
        padded = (b, c, -(-h // multiple) * multiple, -(-w // multiple) * multiple)
        field = self.noise(padded, seed)

        def run_tile(x: Tensor, y0: int, x0: int) -> Tensor:
            zy, zx = y0 * s // d, x0 * s // d
            th, tw = x.shape[-2] * s // d, x.shape[-1] * s // d
            return self.run(x, field[..., zy : zy + th, zx : zx + tw])

        log.info("ONNX: %dx%d LR tiles (overlap %d), blended", tile_lr, tile_lr, overlap_lr)
        return tiled_apply(run_tile, lr, tile=tile_lr, overlap=overlap_lr, multiple=multiple, scale=s,
                           with_origin=True)


def _config(text: str, path: Path) -> Config:
    """The run config stored in the graph: its data and sampling sections (components need no plug-ins)."""
    try:
        raw: Any = yaml.safe_load(text) if text else {}
    except yaml.YAMLError:
        raise DiffsrError(f"{path}: the diffsr_config metadata is not valid YAML") from None
    raw = raw if isinstance(raw, dict) else {}
    keep = {k: raw[k] for k in ("name", "description", "data", "sample") if k in raw}
    return validate(keep, f"{path} (diffsr_config)")
