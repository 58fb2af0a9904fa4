"""Model folders: what ``diffsr export RUN --out MODEL_DIR`` writes, ready to share or push to the Hub.

A model folder holds

- ``model.safetensors``: the EMA weights (the raw weights when the run kept no EMA), fp32 or
  ``dtype`` bf16 / fp16, with the step, the weights' origin and diffsr's version in the header;
- ``config.yaml``: the run config, with the files it names made relative to the folder (a VAE
  codec's folder is copied to ``vae/``, file plug-ins to ``plugins/``);
- ``calibration.json``, when the run has one (``diffsr calibrate``);
- ``README.md``: the model card (:mod:`diffsr.export.card`);
- ``model.onnx`` with ``onnx=True`` (:mod:`diffsr.export.onnx`).

It is a flat folder of plain files: ``huggingface_hub.upload_folder(folder_path=MODEL_DIR,
repo_id=...)`` pushes it unchanged, and ``--ckpt MODEL_DIR`` / ``--ckpt hf://ORG/NAME`` /
:func:`diffsr.load_model` read it back. The folder is written under a temporary name and renamed
when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from diffsr.core.errors import DiffsrError
from diffsr.core.hub import is_hub_id, resolve_model_source
from diffsr.export.card import CardFacts, model_card

__all__ = ["DTYPES", "ExportResult", "export_model", "find_evaluation"]

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    folder: Path
    files: list[str]
    step: int
    onnx_parity: dict[str, float]


def export_model(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dtype: str = "fp32",
    onnx: bool = False,
    license: str = "other",
    tags: list[str] | None = None,
    evaluation: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    opset: int = 17,
) -> ExportResult:
    """Write the model folder of ``run`` (a run, checkpoint or model folder, or ``hf://`` id) to ``out``.

    dtype: fp32 | bf16 | fp16 for the weights. onnx: also write ``model.onnx`` (one-step models
    only; refused otherwise, before anything is written). license, tags: the card's front matter.
    evaluation: a ``diffsr eval`` output (its folder or metrics.json) for the card; None: the
    newest ``metrics.json`` in the run folder or one level below, else the last validation.
    overwrite: replace an existing non-empty ``out``.
    """
    from diffsr.sampling.infer import load_model
    from diffsr.train.checkpoint import read_checkpoint

    if dtype not in DTYPES:
        raise DiffsrError(f"--dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    if onnx and opset < 17:
        raise DiffsrError(f"--opset: {opset} is too old; diffsr exports opset 17 or newer")
    out = Path(out)
    source = resolve_model_source(run)
    _check_out(out, source, overwrite)
    data = read_checkpoint(source)
    loaded = load_model(run, device="cpu")
    if onnx:
        from diffsr.export.onnx import check_one_step

        check_one_step(loaded, str(run))
    folder = _run_folder(loaded.checkpoint)
    ev_path = _evaluation_path(evaluation, folder)
    ev = _read_evaluation(ev_path) if ev_path is not None else None
    weights = data["ema"] if data["ema"] is not None else data["model"]
    kind = "EMA" if data["ema"] is not None or data["meta"].get("weights") == "ema" else "raw (no EMA)"
    from diffsr.core.atomic import atomic_folder

    with atomic_folder(out) as tmp:
        files = _write_weights(tmp, weights, dtype, data["meta"], kind, loaded)
        files.update(_write_config(tmp, loaded.config))
        calibration = _calibration_file(loaded.checkpoint)
        if calibration is not None:
            shutil.copyfile(calibration, tmp / "calibration.json")
            files["calibration.json"] = "calibrated per-pixel intervals (`diffsr calibrate`), used by `--samples N`"
        parity: dict[str, float] = {}
        if onnx:
            from diffsr.export.onnx import export_onnx

            parity = export_onnx(loaded, tmp / "model.onnx", opset=opset).parity
            files["model.onnx"] = f"one graph LR -> SR (opset {opset}, dynamic batch / height / width)"
        files["README.md"] = "this card"
        facts = _facts(loaded, data, run, kind, dtype, license, tags, ev, ev_path, files, parity)
        (tmp / "README.md").write_text(model_card(facts))
    log.info("model folder %s: %s", out, ", ".join(files))
    return ExportResult(out, sorted(files), loaded.step, parity)


def _check_out(out: Path, source: Path, overwrite: bool) -> None:
    src, dst = source.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise DiffsrError(f"--out {out}: would replace the run it exports ({source}); choose another folder")
    if out.exists() and not out.is_dir():
        raise DiffsrError(f"--out {out}: a file is in the way")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DiffsrError(f"--out {out}: exists and is not empty; pass --overwrite to replace it")


def _run_folder(ckpt: Path) -> Path:
    """The run folder of a checkpoint folder (a model folder is its own)."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt


def _write_weights(tmp: Path, weights: dict[str, torch.Tensor], dtype: str, meta: dict[str, Any], kind: str,
                   loaded: Any) -> dict[str, str]:
    from safetensors.torch import save_file

    from diffsr import __version__

    target = DTYPES[dtype]
    tensors = {k: (v.to(target) if v.is_floating_point() else v).contiguous().clone() for k, v in weights.items()}
    header = {"format": "pt", "diffsr_version": __version__, "step": str(loaded.step),
              "weights": "ema" if kind == "EMA" else "model", "dtype": dtype, "name": loaded.config.name,
              "scale": str(loaded.scale), "train_seconds": json.dumps(meta.get("train_seconds"))}
    save_file(tensors, str(tmp / "model.safetensors"), metadata=header)
    return {"model.safetensors": f"{kind} weights, {dtype} ({sum(v.numel() for v in tensors.values()):,} values)"}


def _write_config(tmp: Path, config: Any) -> dict[str, str]:
    """config.yaml, with the files it names copied into the folder and named relative to it."""
    from diffsr.core.plugins import is_file_spec

    data = config.model_dump(mode="json")
    files: dict[str, str] = {"config.yaml": "the run config (`diffsr config`-style YAML)"}
    codec_path = data["codec"].get("path") if isinstance(data.get("codec"), dict) else None
    if codec_path:
        shutil.copytree(codec_path, tmp / "vae")
        data["codec"]["path"] = "vae"
        files["vae/"] = f"the codec's diffusers AutoencoderKL (a copy of {codec_path})"
    plugins = []
    for spec in data.get("plugins") or []:
        if is_file_spec(spec):
            (tmp / "plugins").mkdir(exist_ok=True)
            shutil.copyfile(spec, tmp / "plugins" / Path(spec).name)
            plugins.append(f"plugins/{Path(spec).name}")
            files[f"plugins/{Path(spec).name}"] = "a plug-in the config lists (imported when the model loads)"
        else:
            plugins.append(spec)  # a module name: it must be importable where the model loads
    data["plugins"] = plugins
    (tmp / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return files


def _calibration_file(ckpt: Path) -> Path | None:
    from diffsr.sampling.calibration import CALIBRATION_FILE

    for candidate in (ckpt / CALIBRATION_FILE, ckpt.parent.parent / CALIBRATION_FILE):
        if candidate.is_file():
            return candidate
    return None


def find_evaluation(run_folder: Path) -> Path | None:
    """The newest ``metrics.json`` of a ``diffsr eval`` in ``run_folder`` or one level below (None: none)."""
    found = [p for p in [run_folder / "metrics.json", *run_folder.glob("*/metrics.json")] if p.is_file()]
    found = [p for p in found if _read_evaluation(p, strict=False) is not None]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _evaluation_path(evaluation: str | os.PathLike[str] | None, run_folder: Path) -> Path | None:
    if evaluation is None:
        return None if is_hub_id(str(run_folder)) else find_evaluation(run_folder)
    path = Path(evaluation)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise DiffsrError(f"--eval {evaluation}: no metrics.json there (the --out of a diffsr eval)")
    return path


def _read_evaluation(path: Path, strict: bool = True) -> dict[str, Any] | None:
    try:
        ev = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ev = None
    if not isinstance(ev, dict) or not isinstance(ev.get("summary"), dict):
        if strict:
            raise DiffsrError(f"--eval {path}: not the metrics.json of a diffsr eval")
        return None
    return ev


def _facts(loaded: Any, data: dict[str, Any], run: Any, kind: str, dtype: str, license: str, tags: list[str] | None,
           ev: dict[str, Any] | None, ev_path: Path | None, files: dict[str, str], parity: dict[str, float]
           ) -> CardFacts:
    from diffsr.data.degrade import DEGRADATIONS

    meta = data["meta"]
    seconds = meta.get("train_seconds")
    return CardFacts(
        config=loaded.config, step=loaded.step, weights=kind, dtype=dtype,
        parameters=sum(p.numel() for p in loaded.model.net.parameters()), source=str(run), license=license,
        tags=list(tags or []), train_seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        validation=dict(meta.get("val") or {}), evaluation=ev, evaluation_path=str(ev_path) if ev_path else None,
        files=dict(files), degradations=DEGRADATIONS.names(), onnx_parity=parity,
    )
