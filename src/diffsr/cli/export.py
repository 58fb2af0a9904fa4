"""``diffsr export`` (model folders, ONNX) and ``diffsr sr --onnx``: argument checks and summaries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffsr.core.errors import DiffsrError
from diffsr.core.hub import is_hub_id

__all__ = ["run_export", "run_sr_onnx"]


def run_export(run: str, out: Path, *, dtype: str = "fp32", onnx: bool = False, license: str = "other",
               tags: list[str] | None = None, evaluation: Path | None = None, overwrite: bool = False,
               opset: int = 17) -> str:
    """Write the model folder (and ONNX graph); returns a summary naming the files and how to push them."""
    from diffsr.export.folder import export_model

    if not is_hub_id(run) and not Path(run).exists():
        raise DiffsrError(f"{run}: no such run, checkpoint or model folder")
    result = export_model(run, out, dtype=dtype, onnx=onnx, license=license, tags=tags, evaluation=evaluation,
                          overwrite=overwrite, opset=opset)
    lines = [f"model folder {result.folder} (step {result.step}): {', '.join(result.files)}"]
    if result.onnx_parity:
        lines.append(f"ONNX parity with PyTorch: max abs {max(result.onnx_parity.values()):.1e} on "
                     f"{', '.join(result.onnx_parity)} (LR sizes)")
    lines.append(f"push: huggingface_hub.upload_folder(folder_path='{result.folder}', repo_id='ORG/NAME'); "
                 "use: --ckpt hf://ORG/NAME")
    return "\n".join(lines)


def run_sr_onnx(inputs: list[Path], onnx: Path, out: Path, *, steps: int | None, tile: int | None,
                overlap: int | None, tile_mode: str | None, samples: int, refused: dict[str, Any],
                progress: Callable[[str, int, int], None] | None = None,
                file_options: dict[str, Any] | None = None) -> list[Path]:
    """``diffsr sr --onnx``: the same reading, writing and tiling as the PyTorch path, the graph instead
    of the model. ``refused``: options an ONNX graph cannot honour (named in the error when set).
    ``file_options``: sr_files' normalization / percentiles / window / volume_index / on_error."""
    from diffsr.export.runtime import OnnxModel
    from diffsr.sampling.infer import sr_files

    for option, value in refused.items():
        if value is not None:
            raise DiffsrError(f"{option}: not available with --onnx (the graph is fixed: one step, no data "
                              "consistency); use --ckpt with the PyTorch model")
    if steps not in (None, 1):
        raise DiffsrError(f"--steps {steps}: an ONNX graph samples in one step")
    model = OnnxModel(onnx)
    if tile_mode is not None:
        if tile_mode not in ("auto", "exact", "blend"):
            raise DiffsrError(f"--tile-mode: '{tile_mode}' is not one of auto, exact, blend")
        model.config.sample.tile_mode = tile_mode  # type: ignore[assignment]
    return sr_files(model, inputs, out, tile=tile, overlap=overlap, samples=samples, progress=progress,  # type: ignore[arg-type]
                    method=model.super_resolve, **(file_options or {}))
