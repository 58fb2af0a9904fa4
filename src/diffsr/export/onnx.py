"""ONNX export of one-step models: one graph LR -> SR, the codec's encode and decode inside.

What exports: a model that samples in one step (``sample.steps`` 1, or ``sample.detail`` 0: the
faithful 1-step ResShift / RDDM estimate and every ``diffsr distill`` student) and the
feed-forward baselines (EDSR / RCAN). The graph is exactly the PyTorch one-step path
(:func:`diffsr.sampling.samplers.sample` with one step):

    lr_up = bicubic(lr) (clamped)  ->  reflect-pad to the codec's multiple  ->  zc = encode(lr_up)
    z = process.prior(zc, noise)   ->  net at the largest time  ->  x0  ->  decode  ->  crop, clamp

with inputs ``lr`` (B, C, h, w) in [0, 1] and ``noise`` (B, C', ceil(h s / d), ceil(w s / d)),
standard normal (C' latent channels, d the codec's downsampling; a baseline has no ``noise``),
output ``sr`` (B, C, h s, w s), batch, height and width dynamic, opset >= 17. The noise is an
input, not drawn inside the graph, so the graph is deterministic: ``diffsr sr --onnx`` draws it
exactly as the PyTorch path does (seeded by ``sample.seed``) and gives the same image.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): on this code the
``torch.export``-based exporter took about three minutes for the tiny demo UNet on a 2-core CPU
and fixed the padding branches to the example's size. The traced code avoids size-dependent
branches where it matters (``torch.jit.is_tracing()`` in the UNet's padding and the Haar
transforms). Every export is checked against PyTorch with onnxruntime on three sizes (one of
them odd) before it is written: a graph off by more than 1e-4 is refused, not shipped.

Metadata (``metadata_props``): ``diffsr_config`` (the run config as YAML), ``diffsr_scale``,
``diffsr_channels``, ``diffsr_latent_channels``, ``diffsr_downsample``, ``diffsr_noise``
(the noise input's shape and law), ``diffsr_version`` and ``diffsr_parity`` (the check's result).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffsr.codecs.base import Latent
from diffsr.core.errors import DiffsrError
from diffsr.model import SRModel
from diffsr.sampling.infer import LoadedModel, upsample_lr

__all__ = ["MIN_OPSET", "PARITY_TOLERANCE", "OneStepGraph", "OnnxExport", "check_one_step", "export_onnx",
           "noise_shape"]

log = logging.getLogger(__name__)

MIN_OPSET = 17
PARITY_TOLERANCE = 1e-4
#: (batch, LR height, LR width) of the parity check: square, odd and wide
CHECK_SIZES = ((1, 24, 24), (2, 17, 23), (1, 20, 36))
_EXAMPLE = (2, 20, 28)  # the traced example (batch 2, so no size is a 0/1 special case)


class OneStepGraph(nn.Module):
    """The one-step sampler of an :class:`SRModel` as a traceable module: ``(lr, noise) -> sr``."""

    def __init__(self, model: SRModel, scale: int) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, lr: Tensor, noise: Tensor | None = None) -> Tensor:
        model = self.model
        if model.is_baseline:  # feed-forward: LR -> net -> the pixel codec's [-1, 1] latent -> image
            return model.codec.decode(Latent(model.net(lr), {})).clamp(0, 1)
        lr_up = upsample_lr(lr, self.scale)
        h, w = lr_up.shape[-2:]
        d = model.codec.downsample
        # pad_to's reflect padding without its size branch (a pad of 0 is the identity)
        padded = nn.functional.pad(lr_up, (0, (-w) % d, 0, (-h) % d), mode="reflect")
        zc = model.codec.encode(padded)
        z0 = model.sample_latent(zc.z, 1, noise=noise)
        return model.codec.decode(zc.with_z(z0))[..., :h, :w].clamp(0, 1)


def noise_shape(model: SRModel, scale: int, lr_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The ``noise`` input's shape for an LR batch of ``lr_shape`` (B, C, h, w)."""
    b, c, h, w = lr_shape
    d = model.codec.downsample
    return (b, model.codec.latent_channels(c), -(-h * scale // d), -(-w * scale // d))


def check_one_step(loaded: LoadedModel, where: str) -> None:
    """Refuse, in one line, a model the one-step graph would not reproduce (multi-step, data consistency)."""
    model, sample = loaded.model, loaded.config.sample
    if model.is_baseline:
        return
    steps = sample.steps or model.process.default_steps
    if sample.detail is not None and sample.detail > 0:
        raise DiffsrError(f"{where}: samples with sample.detail {sample.detail:g} (a multi-step chain); ONNX export "
                          f"takes one-step models: make one with `diffsr distill --teacher {where} --out STUDENT`")
    if sample.detail is None and steps != 1:
        raise DiffsrError(f"{where}: a {steps}-step model (process {loaded.config.process.name}); ONNX export takes "
                          f"one-step models: make one with `diffsr distill --teacher {where} --out STUDENT`")
    if sample.consistency != "none" or sample.guidance > 0:
        raise DiffsrError(f"{where}: samples with data consistency (sample.consistency {sample.consistency}, "
                          f"guidance {sample.guidance:g}), which the ONNX graph does not hold")


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and measured."""

    path: Path
    opset: int
    inputs: list[str]
    parity: dict[str, float] = field(default_factory=dict)  # "BxHxW" -> max |onnx - torch|


def export_onnx(source: str | os.PathLike[str] | LoadedModel, out: str | os.PathLike[str], *, opset: int = MIN_OPSET,
                check: bool = True) -> OnnxExport:
    """Export a one-step model (a run / model folder / hub id, or a loaded model) to ``out`` (.onnx).

    The graph is checked against PyTorch with onnxruntime (:data:`CHECK_SIZES`, tolerance
    :data:`PARITY_TOLERANCE`) before ``out`` is written; ``check=False`` skips that (the file then
    says so in its metadata). Multi-step models are refused (:func:`check_one_step`).
    """
    from diffsr.core.atomic import atomic_path
    from diffsr.sampling.infer import load_model

    if opset < MIN_OPSET:
        raise DiffsrError(f"--opset: {opset} is too old; diffsr exports opset {MIN_OPSET} or newer")
    _require("onnx")
    where = str(source.checkpoint if isinstance(source, LoadedModel) else source)
    loaded = source if isinstance(source, LoadedModel) else load_model(source, device="cpu")
    check_one_step(loaded, where)
    graph = OneStepGraph(loaded.model.cpu().float().eval(), loaded.scale).eval()
    inputs = ["lr"] if loaded.model.is_baseline else ["lr", "noise"]
    with atomic_path(Path(out)) as tmp:
        _trace(graph, tmp, inputs, opset, loaded.config.data.channels)
        parity = _parity(graph, tmp, loaded.config.data.channels) if check else {}
        worst = max(parity.values(), default=0.0)
        if worst > PARITY_TOLERANCE:
            size = max(parity, key=parity.get)  # type: ignore[arg-type]
            raise DiffsrError(f"{where}: the ONNX graph differs from PyTorch by {worst:.2e} at size {size} (more than "
                              f"{PARITY_TOLERANCE:g}; net '{loaded.config.net.name}' has size-dependent code the "
                              "tracer fixed); nothing written")
        _annotate(tmp, loaded, parity, check)
    log.info("ONNX graph %s: opset %d, parity %s", out, opset, parity or "not checked")
    return OnnxExport(Path(out), opset, inputs, parity)


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise DiffsrError(f"ONNX needs the '{module}' package: pip install 'diffsr[deploy]'") from None


def _trace(graph: OneStepGraph, path: Path, inputs: list[str], opset: int, channels: int) -> None:
    b, h, w = _EXAMPLE
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(b, channels, h, w, generator=gen)
    args: tuple[Tensor, ...] = (lr,)
    axes: dict[str, dict[int, str]] = {"lr": {0: "batch", 2: "height", 3: "width"},
                                       "sr": {0: "batch", 2: "sr_height", 3: "sr_width"}}
    if "noise" in inputs:
        args += (torch.randn(noise_shape(graph.model, graph.scale, tuple(lr.shape)), generator=gen),)
        axes["noise"] = {0: "batch", 2: "latent_height", 3: "latent_width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=["sr"], dynamic_axes=axes, do_constant_folding=True)


def _parity(graph: OneStepGraph, path: Path, channels: int) -> dict[str, float]:
    """max |onnxruntime - PyTorch| per check size."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    gen = torch.Generator().manual_seed(1)
    out: dict[str, float] = {}
    for b, h, w in CHECK_SIZES:
        lr = torch.rand(b, channels, h, w, generator=gen)
        feed = {"lr": lr}
        if "noise" in names:
            feed["noise"] = torch.randn(noise_shape(graph.model, graph.scale, tuple(lr.shape)), generator=gen)
        with torch.no_grad():
            expected = graph(*feed.values())
        got = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
        if tuple(got.shape) != tuple(expected.shape):
            out[f"{b}x{h}x{w}"] = float("inf")
            continue
        out[f"{b}x{h}x{w}"] = float((torch.from_numpy(got) - expected).abs().max())
    return out


def _annotate(path: Path, loaded: LoadedModel, parity: dict[str, float], checked: bool) -> None:
    """Write the metadata ``diffsr sr --onnx`` and deployment code read."""
    import json

    import onnx

    from diffsr import __version__

    proto = onnx.load(str(path))
    model, scale = loaded.model, loaded.scale
    meta = {
        "diffsr_config": loaded.config.to_yaml(),
        "diffsr_scale": str(scale),
        "diffsr_channels": str(model.channels),
        "diffsr_latent_channels": str(model.codec.latent_channels(model.channels)),
        "diffsr_downsample": str(1 if model.is_baseline else model.codec.downsample),
        "diffsr_noise": ("none" if model.is_baseline else
                         "standard normal (batch, diffsr_latent_channels, ceil(height * diffsr_scale / "
                         "diffsr_downsample), ceil(width * diffsr_scale / diffsr_downsample)), float32"),
        "diffsr_version": __version__,
        "diffsr_step": str(loaded.step),
        "diffsr_parity": json.dumps(parity) if checked else "not checked",
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.doc_string = "diffsr", f"diffsr {loaded.config.name}: LR -> SR x{scale}, one step"
    onnx.save(proto, str(path))
