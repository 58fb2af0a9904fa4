"""The report's zoom-crop choice: the most-differing window, exactly as a stride-1 average pool picks it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffsr.eval.report import choose_crop


def _brute_force(spread: torch.Tensor, size: int) -> tuple[int, int, float]:
    """Every window's mean by a stride-1 average pool; the first maximum in row-major order."""
    pooled = F.avg_pool2d(spread[None, None], size, stride=1)[0, 0]
    y, x = divmod(int(torch.argmax(pooled)), pooled.shape[1])
    return y, x, float(pooled[y, x])


def test_crop_is_the_pools_first_maximum_for_one_and_several_methods() -> None:
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 1, 70, 90, generator=gen)
    a, b = torch.rand(1, 1, 70, 90, generator=gen), torch.rand(1, 1, 70, 90, generator=gen)
    one = choose_crop({"a": a}, hr, 16)
    assert one == _brute_force((a[0, 0].double() - hr[0, 0].double()).abs(), 16)
    two = choose_crop({"a": a, "b": b}, hr, 16)
    assert two == _brute_force((a[0, 0].double() - b[0, 0].double()).abs(), 16)


def test_crop_ties_go_to_the_first_window_and_a_flat_spread_still_works() -> None:
    hr = torch.zeros(1, 1, 40, 40)
    sr = torch.zeros(1, 1, 40, 40)
    sr[..., 10:14, 20:24] = 1.0  # every 8 x 8 window holding the block ties: the first in row-major order
    assert choose_crop({"sr": sr}, hr, 8) == _brute_force(sr[0, 0].double(), 8) == (6, 16, 16 / 64)
    assert choose_crop({"sr": hr.clone()}, hr, 8) == (0, 0, 0.0)  # all windows tie
