"""Validation during training: the image grid, metrics and loss report in TensorBoard, the final grid as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffsr
from diffsr.train.trainer import Trainer
from diffsr.train.validation import PANELS, grid_image


def _events(run: Path):  # noqa: ANN202 (tensorboard's accumulator)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, int]:
    """A 3-step demo run validating every 2 steps on 48x48 images (val crops 48x48: 2 * patch 32 > 48)."""
    root = tmp_path_factory.mktemp("val")
    data = root / "imgs"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # blocks plus noise, as the blocky_pngs fixture
        img = np.kron(rng.random((6, 6)), np.ones((8, 8))) * 0.7 + 0.3 * rng.random((48, 48))
        Image.fromarray((img * 255).astype(np.uint8)).save(data / f"img{i}.png")
    sets = ["data.patch_size=32", "data.batch_size=2", "net.width=16", "net.channel_mult=[1,2]", "train.steps=3",
            "train.time_limit=null", "train.val_every=2", "data.val_images=3", "train.threads=2", "train.log_every=1",
            f"data.train={data}", f"data.val={data}"]
    trainer = Trainer(diffsr.load_config("demo", sets), root / "run", progress=False)
    result = trainer.fit()
    return root / "run", trainer, result.step


def test_grid_image_is_logged_with_the_panel_layout(trained: tuple[Path, object, int]) -> None:
    run, _, _ = trained
    events = _events(run)
    grids = events.Images("val/grid")
    # step 2 (val_every) and step 3 (the end of training: the final model)
    assert [g.step for g in grids] == [2, 3]
    rows, side, gap = 3, 48, 2  # 3 validation images of 48 x 48, make_grid's 2 px gaps
    for g in grids:
        assert (g.width, g.height) == (5 * (side + gap) + gap, rows * (side + gap) + gap)
    legend = events.Tensors("val/grid_legend/text_summary")[0]
    assert " | ".join(PANELS).encode() in legend.tensor_proto.string_val[0]


def test_metrics_and_loss_report_are_logged(trained: tuple[Path, object, int]) -> None:
    run, trainer, _ = trained
    scalars = set(_events(run).Tags()["scalars"])
    for name in ("psnr", "ssim", "sharpness"):
        assert {f"val/{name}", f"val/{name}_bicubic"} <= scalars
    assert {"val/loss/total", "val/loss/diffusion/raw", "val/loss/l1/raw", "val/loss/l1/weighted"} <= scalars
    values = {e.step: e.value for e in _events(run).Scalars("val/psnr")}
    assert set(values) == {2, 3} and all(np.isfinite(v) for v in values.values())


def test_final_grid_is_written_as_png_in_the_run_folder(trained: tuple[Path, object, int]) -> None:
    run, trainer, _ = trained
    png = np.asarray(Image.open(run / "val_grid.png"))
    grid = trainer.val_grid  # the last grid TensorBoard got
    assert png.shape == (grid.shape[1], grid.shape[2], 3)
    expected = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(png, expected)


def test_the_panels_hold_lr_bicubic_sr_hr_and_the_error(trained: tuple[Path, object, int]) -> None:
    run, trainer, _ = trained
    item = trainer.val_set[0]
    grid = trainer.val_grid
    side, gap = 48, 2

    def panel(k: int) -> torch.Tensor:
        x0 = gap + k * (side + gap)
        return grid[0, gap : gap + side, x0 : x0 + side]

    hr, lr, lr_up = item["hr"][0], item["lr"][0], item["lr_up"][0]
    torch.testing.assert_close(panel(0), lr.repeat_interleave(4, 0).repeat_interleave(4, 1))  # nearest x4
    torch.testing.assert_close(panel(1), lr_up.clamp(0, 1))
    torch.testing.assert_close(panel(3), hr)
    sr = panel(2)
    torch.testing.assert_close(panel(4), ((sr - hr).abs() * 4).clamp(0, 1), rtol=0, atol=1e-6)


def test_grid_pads_images_of_different_sizes() -> None:
    rows = [torch.rand(5, 3, 8, 12), torch.rand(5, 3, 10, 6)]
    grid = grid_image(rows)
    assert grid.shape == (3, 2 * (10 + 2) + 2, 5 * (12 + 2) + 2)
    assert torch.equal(grid[:, 2:10, 2:14], rows[0][0]) and grid[:, 10:12, 2:14].abs().sum() == 0  # zero padding
