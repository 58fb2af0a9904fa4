"""The model card (``README.md`` of a model folder): YAML front matter for the Hub, then what the
model is, what it was trained on, how it scored and where it must not be used.

The front matter holds ``library_name: diffsr``, ``license``, ``tags`` and ``pipeline_tag``
(the keys the Hugging Face Hub indexes). The body is built from the run's own records only: its
config, the checkpoint's metadata (step, training time, last validation) and, when there is
one, the ``metrics.json`` of its last ``diffsr eval`` with the conventions it states. Nothing in
it is guessed: a missing record is said to be missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from diffsr.config import Config

__all__ = ["CardFacts", "model_card"]

# the metrics a card table shows, in order, with their direction
_METRICS = {"psnr": "PSNR (dB) higher", "ssim": "SSIM higher", "lpips": "LPIPS lower", "nrmse": "NRMSE lower",
            "hfen": "HFEN lower", "sharpness": "sharpness (1 = HR)"}
_BUILTIN = ("the built-in samples: RoadScene thermal infrared crops and Kirby21 T1 MRI slices "
            "(`diffsr/data/samples`, research use only, see `diffsr/NOTICE`)")


@dataclass
class CardFacts:
    """Everything a card says, gathered by :func:`diffsr.export.export_model`."""

    config: Config
    step: int
    weights: str  # "EMA" or "raw (no EMA)"
    dtype: str
    parameters: int
    source: str  # where the run came from (a path or hub id)
    license: str = "other"
    tags: list[str] = field(default_factory=list)
    train_seconds: float | None = None
    validation: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # a diffsr eval metrics.json
    evaluation_path: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # file name -> what it is
    degradations: list[str] = field(default_factory=list)  # every registered degradation
    onnx_parity: dict[str, float] = field(default_factory=dict)


def model_card(facts: CardFacts) -> str:
    """The README.md text of a model folder."""
    cfg = facts.config
    front = {
        "library_name": "diffsr",
        "license": facts.license,
        "pipeline_tag": "image-to-image",
        "tags": _tags(facts),
    }
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n",
        f"# {cfg.name}\n",
        (cfg.description.strip() + "\n") if cfg.description.strip() else "",
        f"A diffsr super-resolution model: x{cfg.data.scale}, {cfg.data.channels}-channel images in, "
        f"{_sampling(cfg, facts)}. Exported from `{facts.source}` at training step {facts.step}.\n",
        _usage(facts),
        _model_section(facts),
        _training_section(facts),
        _evaluation_section(facts),
        _use_section(facts),
        _files_section(facts),
    ]
    return "\n".join(p for p in parts if p)


def _tags(facts: CardFacts) -> list[str]:
    cfg = facts.config
    tags = ["diffsr", "super-resolution", f"x{cfg.data.scale}", cfg.process.name, cfg.codec.name, cfg.net.name,
            *facts.tags]
    if "model.onnx" in facts.files:
        tags.append("onnx")
    return list(dict.fromkeys(tags))  # unique, in order


def _sampling(cfg: Config, facts: CardFacts) -> str:
    if cfg.process.name == "direct":
        return "a feed-forward network (one pass)"
    steps = cfg.sample.steps
    if cfg.sample.detail is not None:
        return f"sampled with the detail knob at {cfg.sample.detail:g} (0 faithful .. 1 a full chain)"
    if not steps:
        return "sampled with the process's default steps"
    return f"sampled in {steps} step{'s' if steps != 1 else ''}"


def _usage(facts: CardFacts) -> str:
    c = facts.config.data.channels
    lines = ["## Use\n", "```bash", "pip install diffsr",
             "diffsr sr INPUT_IMAGES --ckpt hf://ORG/NAME --out OUT   # or --ckpt THIS_FOLDER", "```", "",
             "```python", "import torch, diffsr", 'model = diffsr.load_model("hf://ORG/NAME")   # or the folder path',
             f"lr = torch.rand(1, {c}, 64, 64)                       # (B, C, h, w) in [0, 1]",
             f"sr = diffsr.super_resolve(model, lr)                 # (1, {c}, {64 * facts.config.data.scale}, "
             f"{64 * facts.config.data.scale})", "```", ""]
    if "model.onnx" in facts.files:
        lines += ["ONNX (one graph LR -> SR, onnxruntime CPU): `diffsr sr INPUT --onnx model.onnx --out OUT`. "
                  "Inputs `lr` (B, C, h, w) in [0, 1] and, for diffusion models, `noise` (standard normal, shape in "
                  "the graph's `diffsr_noise` metadata); output `sr`. See docs/models.md of diffsr.", ""]
    return "\n".join(lines)


def _model_section(facts: CardFacts) -> str:
    cfg = facts.config
    rows = [
        ("process", _fields(cfg.process)),
        ("codec", _fields(cfg.codec)),
        ("net", f"{_fields(cfg.net)}; {facts.parameters:,} parameters"),
        ("sampling", _fields(cfg.sample, skip=("tile_mode", "overlap", "consistency_iters"))),
        ("weights", f"{facts.weights}, {facts.dtype}"),
    ]
    return "## Model\n\n" + _table(rows)


def _training_section(facts: CardFacts) -> str:
    cfg, data = facts.config, facts.config.data
    terms = "; ".join(_term(t) for t in cfg.losses.terms) or "none"
    val = f"`{data.val}`" if data.val else "the built-in validation samples" if not data.train else \
        f"a {data.val_fraction:g} split of the training files"
    rows = [
        ("training data", f"`{data.train}`" if data.train else _BUILTIN),
        ("validation data", val),
        ("LR images", f"`{data.lr_dir}` (real pairs)" if data.lr_dir else
         f"made from HR by the degradation {_fields(data.degradation)}"),
        ("scale, channels", f"x{data.scale}, {data.channels}"),
        ("intensities", f"normalization `{data.normalization}`" + (f", window {data.window}" if data.window else "")),
        ("crops, batch", f"{data.patch_size} px HR crops, batch {data.batch_size}"),
        ("steps", f"{facts.step} of {cfg.train.steps}" + (f" (time limit {cfg.train.time_limit:g} s)"
                                                          if cfg.train.time_limit else "")),
        ("training time", _duration(facts.train_seconds)),
        ("losses", f"diffusion weight {cfg.losses.diffusion_weight:g}; terms: {terms}"),
        ("optimiser", f"AdamW lr {cfg.train.lr:g}, {cfg.train.lr_schedule}, EMA {cfg.train.ema_decay}, "
                      f"seed {cfg.train.seed}"),
    ]
    return "## Training\n\n" + _table(rows)


def _evaluation_section(facts: CardFacts) -> str:
    ev = facts.evaluation
    if ev:
        return _eval_table(ev, facts.evaluation_path or "metrics.json")
    if facts.validation:
        v = facts.validation
        rows = [(name, _num(v.get(f"val/{key}")), _num(v.get(f"val/{key}_bicubic")))
                for key, name in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("sharpness", "sharpness (1 = HR)"))]
        body = "| metric | model | bicubic |\n|---|---|---|\n" + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in rows)
        return ("## Evaluation\n\nNo `diffsr eval` run was found for this model. The last validation during training "
                f"(step {facts.step}, {int(v.get('val/images', 0))} images):\n\n{body}\n"
                "Conventions: centre crops of the validation images, LR made by the training degradation, data "
                "range 1, no border crop, all channels (no Y conversion), SSIM Gaussian window 11 / sigma 1.5, "
                f"sharpness above {0.5 / facts.config.data.scale:g} of Nyquist. Validation images steer training "
                "choices: these numbers are not a held-out test.\n")
    return ("## Evaluation\n\nNo evaluation was recorded for this run. Measure it with `diffsr eval --data TEST_DIR "
            "--method bicubic --method MODEL_DIR --out EVAL` and export again with `--eval EVAL`.\n")


def _eval_table(ev: dict[str, Any], where: str) -> str:
    summary = ev.get("summary") or {}
    methods = [m for m in ev.get("methods", list(summary)) if m in summary]
    metrics = [m for m in _METRICS if any(m in summary[x] for x in methods)]
    head = "| method | " + " | ".join(_METRICS[m] for m in metrics) + " |\n|---|" + "---|" * len(metrics) + "\n"
    body = "".join(f"| {m} | " + " | ".join(_num((summary[m].get(k) or {}).get("mean")) for k in metrics) + " |\n"
                   for m in methods)
    meta, conv = ev.get("meta") or {}, ev.get("conventions") or {}
    inputs = ev.get("inputs") or {}
    data = inputs.get("data") or inputs.get("hr") or "?"
    conv_text = ", ".join(f"{k} {conv[k]}" for k in ("data_range", "crop_border", "y_channel", "quantize_bits",
                                                     "bicubic", "lpips_net", "sharpness_cutoff") if k in conv)
    notes = "".join(f"- {n}\n" for n in ev.get("notes") or [] if isinstance(n, str))
    return (f"## Evaluation\n\nFrom `{where}` ({meta.get('images', '?')} images of `{data}`, "
            f"x{meta.get('scale', '?')}, {meta.get('created', 'date not recorded')}), mean per image:\n\n{head}{body}\n"
            f"Conventions: {conv_text or 'not recorded'}."
            + (f" Reproduce: `{ev['reproduce']}`." if ev.get("reproduce") else "") + "\n"
            + (f"\nNotes of that evaluation:\n\n{notes}" if notes else ""))


def _use_section(facts: CardFacts) -> str:
    cfg = facts.config
    trained = cfg.data.degradation.name if not cfg.data.lr_dir else "the real LR images of its pairs"
    others = [d for d in facts.degradations if d != cfg.data.degradation.name]
    lines = [
        "## Intended use\n",
        f"Research on x{cfg.data.scale} super-resolution of images like its training data "
        f"({'the built-in infrared and MRI samples' if not cfg.data.train else f'`{cfg.data.train}`'}).\n",
        "## Limitations\n",
        "- **Research use; not for diagnosis.** Do not base any clinical, safety or legal decision on its output.",
        "- Generative SR can add plausible detail that is not in the scene (hallucination); a 1-step or low "
        "`detail` output is the most faithful. " + ("Calibrated per-pixel intervals: `calibration.json` "
                                                     "(`diffsr sr --samples N`)." if "calibration.json" in facts.files
                                                     else "No calibrated uncertainty ships with it."),
        f"- Trained for LR made by {trained}; it was not trained for the degradations "
        f"{', '.join(f'`{d}`' for d in others) or '(none other registered)'}, nor for real sensor noise, "
        "blur, compression or motion it did not see. Expect it to fail on them.",
        f"- x{cfg.data.scale} only, {cfg.data.channels}-channel images "
        + ("(RGB inputs are processed channel by channel)." if cfg.data.channels == 1
           else "(grey inputs are replicated)."),
        "- The training data's terms apply to the weights (see the training data above).",
    ]
    if cfg.codec.name == "vae":
        lines.append("- The VAE in `vae/` is a copy of the codec the run used; its own licence applies.")
    if facts.onnx_parity:
        worst = max(facts.onnx_parity.values())
        lines.append(f"- `model.onnx` matches the PyTorch model to {worst:.1e} (max abs, sizes "
                     f"{', '.join(facts.onnx_parity)}); it is tiled in blend mode only.")
    return "\n".join(lines) + "\n"


def _files_section(facts: CardFacts) -> str:
    return "## Files\n\n" + "".join(f"- `{name}`: {what}\n" for name, what in facts.files.items())


def _fields(model: Any, skip: tuple[str, ...] = ()) -> str:
    data = model.model_dump(mode="json", exclude_none=True)
    items = [f"{k} {v}" for k, v in data.items() if k not in skip and not isinstance(v, (dict, list))]
    name = data.get("name") or data.get("kind")
    rest = [i for i in items if not i.startswith(("name ", "kind "))]
    return (f"`{name}`" if name else "") + (" (" + ", ".join(rest) + ")" if rest and name else ", ".join(rest))


def _term(term: Any) -> str:
    """'`l1` weight constant 0.5, gate hard t_max 1, paired only'."""
    weight, gate = term.weight.model_dump(mode="json"), term.gate.model_dump(mode="json")
    text = f"`{term.key}` weight " + " ".join(str(v) for v in weight.values() if not isinstance(v, (dict, list)))
    if gate.get("kind", "none") != "none":
        text += ", gate " + " ".join(f"{v}" if k == "kind" else f"{k} {v}" for k, v in gate.items()
                                     if not isinstance(v, (dict, list)))
    return text + (", paired only" if term.paired_only else "")


def _table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded (run trained before diffsr recorded it)"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
