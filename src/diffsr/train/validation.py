"""Validation during training: metrics, the loss report and an image grid of the validation images.

Every ``train.val_every`` steps the (EMA) model super-resolves the validation images (centre crops
of at most ``2 * data.patch_size`` HR pixels, degraded as in training) with the run's sampling
options, and :class:`~diffsr.train.logs.TrainLog` writes:

- ``val/psnr``, ``val/ssim``, ``val/sharpness`` and the same for bicubic (``val/*_bicubic``): per
  image, then the mean. Conventions: data range 1, the whole crop (no border crop), every channel
  (no Y conversion), SSIM with a Gaussian window 11 / sigma 1.5, sharpness = high-frequency energy
  of SR over HR above 0.5 / scale of Nyquist (1.0 = as sharp as HR);
- ``val/loss/<term>/raw|weighted`` and ``val/loss/total``: the loss stack on the validation images
  (THE training forward with timesteps and noise seeded by the image index, the step's weights),
  without changing the stack's training state;
- ``val/grid``: one row per validation image (the first :data:`GRID_IMAGES`), five panels
  LR (nearest) | bicubic | SR | HR | ``|SR - HR|`` x :data:`ERROR_GAIN` (clipped at 1), grey
  images shown in grey, panels zero-padded to the largest crop, 2 px white gaps
  (``torchvision.utils.make_grid``). At the end of training the grid of the final model is also
  written to ``<run>/val_grid.png``.

The images are sharded over processes like the metrics; each process sends its grid rows to the
main process, which alone writes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from diffsr.core.errors import DiffsrError
from diffsr.model import stack_inputs
from diffsr.train.batches import step_generator

if TYPE_CHECKING:
    from diffsr.train.trainer import Trainer

__all__ = ["ERROR_GAIN", "GRID_IMAGES", "PANELS", "grid_image", "validate"]

log = logging.getLogger(__name__)

GRID_IMAGES = 4  # validation images shown in the grid (rows)
ERROR_GAIN = 4.0  # |SR - HR| is shown times this, clipped at 1
PANELS = ("LR (nearest)", "bicubic", "SR", "HR", f"|SR - HR| x{ERROR_GAIN:g}")


@torch.no_grad()
def validate(trainer: Trainer, max_items: int | None = None) -> tuple[dict[str, float], Tensor | None]:
    """(scalars, grid): the validation metrics and loss report of ``trainer``'s (EMA) model, and
    the image grid (3, H, W) in [0, 1] on the main process (None elsewhere, or without images)."""
    model = trainer.ema.shadow if trainer.ema is not None else trainer.raw_model
    model.eval()
    val_set = trainer.val_set
    n = len(val_set) if max_items is None else min(max_items, len(val_set))
    rows: list[list[float]] = []
    reports: list[dict[str, float]] = []
    panels: list[tuple[int, Tensor]] = []
    # sharded: every process must run as many forward passes as the others (each gathers
    # parameters from all); a process short of images samples one more and drops it
    mine = list(range(trainer.rank, n, trainer.world))
    rounds = -(-n // trainer.world) if trainer.sharded else len(mine)
    for k in range(rounds):
        i = mine[k] if k < len(mine) else 0
        item, sr = _sample(trainer, model, i)
        report = _loss_report(trainer, model, item, i)
        if k >= len(mine):
            continue
        rows.append(_metrics(sr, item["hr"], item["lr_up"], trainer.config.data.scale))
        if report:
            reports.append(report)
        if i < GRID_IMAGES:
            panels.append((i, _row(item, sr).cpu()))
    rows, reports, panels = _gather(trainer, rows, reports, panels)
    if not rows:
        return {}, None
    values = torch.tensor(rows, dtype=torch.float64)
    out = {name: float(values[:, j].nanmean()) for j, name in enumerate(METRICS)}
    out["val/images"] = float(len(values))
    for key in sorted({k for r in reports for k in r}):
        out[key] = float(torch.tensor([r[key] for r in reports if key in r], dtype=torch.float64).mean())
    grid = grid_image([p for _, p in sorted(panels, key=lambda x: x[0])]) if panels else None
    return out, grid


METRICS = ("val/psnr", "val/psnr_bicubic", "val/ssim", "val/ssim_bicubic", "val/sharpness", "val/sharpness_bicubic")


def _sample(trainer: Trainer, model: Any, i: int) -> tuple[dict[str, Tensor], Tensor]:
    """Validation item ``i`` on the device (with a batch axis) and the model's SR of it."""
    device = trainer.accelerator.device
    raw = trainer.val_set[i]
    item = {k: raw[k][None].to(device) for k in ("hr", "lr", "lr_up", "mask")}
    item["paired"] = raw["paired"].reshape(1).to(device)
    gen = step_generator(trainer.config.sample.seed, i, device)
    # a baseline (EDSR / RCAN / SwinIR) maps the LR image itself to SR
    lr = item["lr"] if model.is_baseline else None
    sr = model.sample(item["lr_up"], steps=trainer.config.sample.steps, generator=gen, lr=lr)
    return item, sr


def _metrics(sr: Tensor, hr: Tensor, lr_up: Tensor, scale: int) -> list[float]:
    """PSNR, SSIM and sharpness of SR and of bicubic against HR (METRICS' order)."""
    from diffsr.eval.metrics import psnr, sharpness_ratio, ssim_metric

    bicubic = lr_up.clamp(0, 1)
    cutoff = 0.5 / scale
    return [float(psnr(sr, hr, data_range=1.0)[0]), float(psnr(bicubic, hr, data_range=1.0)[0]),
            float(ssim_metric(sr, hr, data_range=1.0)[0]), float(ssim_metric(bicubic, hr, data_range=1.0)[0]),
            float(sharpness_ratio(sr, hr, cutoff=cutoff)[0]), float(sharpness_ratio(bicubic, hr, cutoff=cutoff)[0])]


def _loss_report(trainer: Trainer, model: Any, item: dict[str, Tensor], i: int) -> dict[str, float]:
    """The loss stack's report on validation item ``i`` ({} when the stack refuses it, e.g. NaN)."""
    gen = step_generator(trainer.config.train.seed + 1, i, item["hr"].device)
    try:
        outputs = model(item["hr"], item["lr_up"], gen, lr=item["lr"])
        report = trainer.stack.report_only(**stack_inputs(outputs, item, model), step=trainer.step,
                                           last_layer=model.last_layer)
    except DiffsrError as err:
        log.warning("validation image %d: no loss report (%s)", i, err)
        return {}
    out = {"val/loss/total": report.total}
    for term, r in report.terms.items():
        out[f"val/loss/{term}/raw"] = r.raw
        out[f"val/loss/{term}/weighted"] = r.weighted
    return out


def _row(item: dict[str, Tensor], sr: Tensor) -> Tensor:
    """The five panels (5, 3, H, W) of one validation image."""
    hr, lr = item["hr"], item["lr"]
    nearest = torch.nn.functional.interpolate(lr, size=hr.shape[-2:], mode="nearest")
    error = ((sr - hr).abs() * ERROR_GAIN).clamp(0, 1)
    row = torch.cat([nearest, item["lr_up"], sr, hr, error]).clamp(0, 1).float()
    return row.expand(-1, 3, -1, -1) if row.shape[1] == 1 else row[:, :3]


def grid_image(rows: list[Tensor]) -> Tensor:
    """Rows of panels (5, 3, h_i, w_i) -> one image (3, H, W): zero-padded to the largest panel,
    five per row, 2 px white gaps (``torchvision.utils.make_grid``)."""
    from torchvision.utils import make_grid

    h = max(r.shape[-2] for r in rows)
    w = max(r.shape[-1] for r in rows)
    padded = [torch.nn.functional.pad(r, (0, w - r.shape[-1], 0, h - r.shape[-2])) for r in rows]
    return make_grid(torch.cat(padded), nrow=len(PANELS), padding=2, pad_value=1.0)


def _gather(trainer: Trainer, rows: list[Any], reports: list[Any], panels: list[Any]
            ) -> tuple[list[Any], list[Any], list[Any]]:
    """Every process's results on every process (one process: unchanged)."""
    if trainer.world == 1:
        return rows, reports, panels
    from accelerate.utils import gather_object

    return gather_object(rows), gather_object(reports), gather_object(panels)
