"""What a training run shows and records: the progress bar and the TensorBoard scalars.

Fixed TensorBoard names (STYLE §8): ``loss/<term>/raw|weighted``, ``weight/<term>``,
``active/<term>`` (every term, weight 0 too, so dead ones show), ``loss/total``, ``train/*``
(learning rate, gradient norm, speed, skipped steps and NaN/Inf counts), ``skipped/<term>``,
``val/*`` scalars and the ``val/grid`` image (:mod:`diffsr.train.validation`). Only the main
process writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["TrainLog", "progress_bar"]


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def progress_bar(enabled: bool) -> Any:
    """A rich progress bar (steps, time left, the loss summary), or a silent stand-in."""
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    )


class TrainLog:
    """The run's TensorBoard writer (None on non-main processes: every call is then a no-op)."""

    def __init__(self, run_dir: Path | None) -> None:
        self.writer: Any = None
        self._legend = False
        if run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def step(self, step: int, report: Any, *, lr: float, grad_norm: float, rate: float, skipped: int,
             nonfinite_terms: int, term_skips: dict[str, int], skipped_discriminator: int) -> None:
        """The scalars of one logged training step."""
        if self.writer is None:
            return
        from diffsr.losses import log_report

        w = self.writer
        log_report(w, report, step)
        w.add_scalar("train/lr", lr, step)
        w.add_scalar("train/grad_norm", grad_norm, step)
        w.add_scalar("train/it_per_s", rate, step)
        w.add_scalar("train/skipped_steps", skipped, step)
        w.add_scalar("train/nonfinite_terms", nonfinite_terms, step)
        for name in report.terms:  # per-term NaN/Inf drop counts (cumulative)
            w.add_scalar(f"skipped/{name}", term_skips.get(name, 0), step)
        w.add_scalar("train/skipped_discriminator_steps", skipped_discriminator, step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Named scalars (validation metrics)."""
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def grid(self, image: Any, step: int) -> None:
        """The validation image grid (3, H, W) in [0, 1] as ``val/grid`` (nothing when None)."""
        if self.writer is None or image is None:
            return
        if not self._legend:
            from diffsr.train.validation import PANELS

            self.writer.add_text("val/grid_legend", "columns: " + " | ".join(PANELS), step)
            self._legend = True
        self.writer.add_image("val/grid", image, step, dataformats="CHW")

    def final_grid(self, image: Any, path: Path) -> None:
        """Write the last validation grid as a PNG (main process; nothing when None)."""
        if self.writer is None or image is None:
            return
        import numpy as np
        from PIL import Image

        from diffsr.core.atomic import atomic_save

        pixels = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        atomic_save(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))

    def close(self) -> None:
        """Flush and close (a stopped run keeps its curves)."""
        if self.writer is not None:
            self.writer.close()
