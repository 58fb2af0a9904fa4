"""``diffsr sr`` on files: where each output goes, what may not be overwritten, the record of units.

Before any compute, :func:`plan_outputs` decides every path the call will write (the SR image,
its ``_std`` / ``_lo`` / ``_hi`` companions, and a ``<output>.json`` record) and refuses, in one
line each:

- two inputs that map to the same output (``a/scan.png`` and ``b/scan.png``; ``scan.dcm`` and a
  folder ``scan/``), among all the paths of every input;
- an output that would overwrite an input, or an output folder that holds an input;
- an output path taken by something of the other kind (a folder where a file goes, a file
  where a DICOM folder goes), or an existing output folder that holds files diffsr did not write
  (a DICOM output folder is replaced as a whole).

:func:`write_units_record` writes the ``<output>.json`` record: the intensity mapping used
(policy, lo, hi, why), what it clipped, and that ``file value = lo + u (hi - lo)`` maps the
outputs back to the input's units. :func:`sr_memory` estimates what one input needs, checked
before it is read into the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffsr.core.errors import DataError, DiffsrError

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

#: companions written next to ``<name>_sr`` for N > 1 samples (``lo`` / ``hi`` with a calibration)
EXTRAS = ("std", "lo", "hi")


@dataclass
class OutputPlan:
    """The paths one input writes: ``sr``, ``extras`` by kind (std, lo, hi) and the ``record`` JSON."""

    source: Path
    sr: Path
    folder: bool  # the SR output is a folder (a DICOM series)
    extras: dict[str, Path] = field(default_factory=dict)
    record: Path | None = None

    @property
    def paths(self) -> list[Path]:
        """Every path this input writes."""
        return [self.sr, *self.extras.values(), *([self.record] if self.record else [])]


def output_name(path: Path, fmt: str | None) -> str:
    """``<name>_sr`` with the input's suffix (a DICOM file or folder gives a folder ``<name>_sr``)."""
    if fmt == "dicom":
        return (path.name if path.is_dir() else path.stem) + "_sr"
    if path.name.lower().endswith(".nii.gz"):
        return path.name[: -len(".nii.gz")] + "_sr.nii.gz"
    return f"{path.stem}_sr{path.suffix}"


def companion_name(name: str, suffix: str) -> str:
    """``x_sr.png`` -> ``x_sr_std.png``; ``v_sr.nii.gz`` -> ``v_sr_std.nii.gz``; ``scan_sr`` -> ``scan_sr_std``."""
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")] + f"_{suffix}.nii.gz"
    p = Path(name)
    return f"{p.stem}_{suffix}{p.suffix}" if p.suffix else f"{name}_{suffix}"


def plan_outputs(inputs: list[Path], files: list[Path], out: Path, *, extras: tuple[str, ...] = (),
                 record: bool = True) -> list[OutputPlan]:
    """The :class:`OutputPlan` of every file in ``files`` (what ``inputs`` expand to) under ``out``.

    Raises DiffsrError (one line, before anything is written) for the clashes listed in the module
    docstring.
    """
    from diffsr.data.io import format_of

    plans = []
    for path in files:
        fmt = format_of(path)
        name = output_name(path, fmt)
        plan = OutputPlan(path, out / name, folder=fmt == "dicom",
                          extras={kind: out / companion_name(name, kind) for kind in extras})
        if record:
            plan.record = out / f"{name}.json"
        plans.append(plan)
    _check_clashes(plans)
    _check_inputs_kept(plans, inputs, files)
    for plan in plans:
        _check_existing(plan)
    return plans


def _check_clashes(plans: list[OutputPlan]) -> None:
    taken: dict[str, OutputPlan] = {}
    for plan in plans:
        for path in plan.paths:
            key = str(path.resolve())
            other = taken.get(key)
            if other is not None and other is not plan and other.source.resolve() == plan.source.resolve():
                raise DiffsrError(f"{plan.source}: given twice (also as {other.source}); give each input once")
            if other is not None and other is not plan:
                raise DiffsrError(f"{other.source} and {plan.source} would both be written to {path}; rename one "
                                  "or run them with different --out folders")
            taken[key] = plan


def _check_inputs_kept(plans: list[OutputPlan], inputs: list[Path], files: list[Path]) -> None:
    """No output may be an input, or be a folder holding one (it is replaced as a whole)."""
    sources = {p.resolve() for p in [*inputs, *files]}
    for plan in plans:
        for path in plan.paths:
            target = path.resolve()
            for source in sources:
                if target == source:
                    raise DiffsrError(f"{path}: would overwrite the input {source}; choose another --out")
                if plan.folder and path == plan.sr and target in source.parents:
                    raise DiffsrError(f"{path}: the output folder would replace the input {source} inside it; "
                                      "choose another --out")


def _check_existing(plan: OutputPlan) -> None:
    """An existing output path must be of the kind diffsr writes there, and hold only its outputs."""
    from diffsr.data.io.dicom import _is_dicom_file

    for path in plan.paths:
        folder = plan.folder and path in (plan.sr, *plan.extras.values())
        if not path.exists() and not path.is_symlink():
            continue
        if folder and not path.is_dir():
            raise DiffsrError(f"{path}: a DICOM output is a folder, but a file of that name exists; move it or "
                              "choose another --out")
        if not folder and path.is_dir():
            raise DiffsrError(f"{path}: is a folder where the output file must go; move it or choose another --out")
        if folder:
            foreign = [p.name for p in path.iterdir() if not (p.is_file() and _is_dicom_file(p))]
            if foreign:
                names = ", ".join(sorted(foreign)[:3])
                raise DiffsrError(f"{path}: exists and holds files diffsr did not write ({names}); an output folder "
                                  "is replaced as a whole: move them or choose another --out")


def intensity_for(loaded: Any, record: Any, normalization: str | None, percentiles: tuple[float, float] | None,
                  window: tuple[float, float] | None) -> tuple[Any, str]:
    """The intensity mapping of ``record`` for ``diffsr sr`` and how it was chosen (for the record).

    ``normalization`` / ``percentiles`` / ``window`` None: the model's ``data.*``. A policy taken
    from the model that clearly does not fit the input (:func:`~diffsr.data.normalize.check_fits`)
    is a DataError; an explicit one is used with a warning. What percentile / window saturate is
    reported with its share of values.
    """
    from diffsr.data.normalize import check_fits, clipped, default_policy, describe_policy, fit_intensity

    data_cfg = loaded.config.data
    explicit = normalization is not None
    policy = normalization or data_cfg.normalization
    source = f"--normalization {policy}" if explicit else f"the model's data.normalization {policy}"
    if policy == "auto":
        policy = default_policy(record)
        source += f": {policy} ({describe_policy(record, policy)})"
    intensity = fit_intensity(record, policy, percentiles or tuple(data_cfg.percentiles),  # type: ignore[arg-type]
                              window or data_cfg.window)
    misfit = check_fits(record, intensity)
    if misfit and not explicit:
        raise DataError(f"{record.path}: {misfit} ({source}); pass --normalization minmax (the data's range) or "
                        "another policy")
    if misfit:
        log.warning("%s: %s (%s)", record.path, misfit, source)
    cut = clipped(record, intensity)
    if cut.fraction > 0 and not misfit:
        log.warning("%s: normalization %s maps %.6g..%.6g to [0, 1]: %.2f %% of the values (data %.6g..%.6g) lie "
                    "outside and come back clipped to it; --normalization minmax keeps the full range",
                    record.path, intensity.policy, intensity.lo, intensity.hi, 100 * cut.fraction, cut.data_min,
                    cut.data_max)
    return intensity, source


def write_units_record(plan: OutputPlan, *, record: Any, intensity: Any, policy_source: str, loaded: Any,
                       options: dict[str, Any], written: dict[str, Path]) -> Path | None:
    """Write ``plan.record``: which units the outputs are in and how they map to the model's [0, 1]."""
    from diffsr import __version__
    from diffsr.core.atomic import atomic_write_text
    from diffsr.data.normalize import clipped

    if plan.record is None:
        return None
    cut = clipped(record, intensity)
    data = {
        "diffsr": __version__,
        "input": str(plan.source.resolve()),
        "outputs": {kind: path.name for kind, path in written.items()},
        "format": record.format,
        "dtype": record.meta.get("dtype"),
        "intensity": {**intensity.to_dict(), "chosen": policy_source, "clipped": cut.to_dict()},
        "units": (f"the outputs hold the input's units ({record.meta.get('dtype')}): file value = lo + u (hi - lo) "
                  "for the model's u in [0, 1]; std / interval half-widths scale by (hi - lo) without the offset"),
        "checkpoint": str(getattr(loaded, "checkpoint", None) or getattr(loaded, "path", "")),
        "step": getattr(loaded, "step", None),
        "scale": loaded.scale,
        "sampling": options,
    }
    atomic_write_text(plan.record, json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")
    return plan.record


def sr_memory(loaded: Any, shape: tuple[int, ...], *, samples: int, tile: int | None, itemsize: int) -> int:
    """A lower estimate of the bytes ``diffsr sr`` needs for a record of ``shape`` (N, C, h, w).

    Counted: the [0, 1] input; the whole SR output (float32) and its copy in the file's dtype
    (``itemsize`` bytes); with ``samples`` > 1 the N draws and the std / interval maps; per slice
    the sampler's image-sized float32 state (untiled: the current latent and its update; with
    ``--tile`` one: exact tiles keep the whole latent, blended tiles a whole-image accumulator)
    and the net's activations: 3 tensors of ``net.width`` channels on the latent grid of the
    whole image, or of one tile. The real peak is higher (the net holds skip connections;
    measured on the demo model at x4, uint8: about 16 bytes per output value with exact tiles of
    512, 11.4 with blended ones, where this counts 13 untiled and 9 tiled), so a refusal is
    certain and a pass is not a promise.
    """
    n, c, h, w = (int(v) for v in shape)
    s = loaded.scale
    big_h, big_w = h * s, w * s
    hr = c * big_h * big_w
    codec = getattr(getattr(loaded, "model", None), "codec", None)  # an ONNX graph: its own downsample
    d = getattr(codec, "downsample", None) or getattr(loaded, "downsample", 1) or 1
    width = int(getattr(loaded.config.net, "width", 64) or 64)
    side_h, side_w = (min(tile, big_h), min(tile, big_w)) if tile else (big_h, big_w)
    activations = 3 * width * (side_h // d + 1) * (side_w // d + 1)
    draws = samples * hr if samples > 1 else 0
    per_slice = 4 * ((1 if tile else 2) * hr + draws + activations)
    extras = 3 if samples > 1 else 0
    return 4 * n * c * h * w + n * hr * (4 * (1 + extras) + itemsize) + per_slice


def check_sr_memory(loaded: Any, path: Path, shape: tuple[int, ...], *, samples: int, tile: int | None,
                    itemsize: int, device: str) -> None:
    """DataError (one line) when :func:`sr_memory` exceeds the memory ``device`` has available."""
    from diffsr.core.memory import check_memory

    need = sr_memory(loaded, shape, samples=samples, tile=tile, itemsize=itemsize)
    n, c, h, w = shape
    hint = ("the output alone is this large; use a machine with more memory" if tile else
            "pass --tile 512 (activations bounded by one tile) or use a machine with more memory")
    try:
        check_memory(need, f"{path}: x{loaded.scale} super-resolution of {w}x{h}x{c}"
                           + (f" ({n} slices)" if n > 1 else "") + (f" in tiles of {tile}" if tile else " (untiled)"),
                     device=device, hint=hint)
    except DiffsrError as err:
        raise DataError(str(err)) from None


def calibrated_interval(stack: Tensor, calibration: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibrated half-width, lower, upper) for N samples (N, B, C, H, W), in [0, 1] units."""
    from diffsr.sampling.calibration import interval, interval_scales

    mean, lo, up = interval_scales(stack.cpu().double().numpy(), calibration.interval, alpha=calibration.alpha)
    lower, upper = interval(mean, lo, up, calibration.lam)
    return calibration.lam * (lo + up) / 2, lower, upper


def check_output_dir(out: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output folder inside an input folder (outputs would be re-read as inputs)."""
    out_r = out.resolve()
    for p in inputs:
        p_r = p.resolve()
        root = p_r if p_r.is_dir() else p_r.parent
        if p_r.is_dir() and (out_r == root or root in out_r.parents):
            raise DataError(f"{out}: output folder is inside the input folder {p}; choose another --out")
        if p_r.is_file() and out_r == p_r:
            raise DataError(f"{out}: output path is the input file")
