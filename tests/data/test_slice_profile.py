"""The one-axis (thick-slice) degradation: hand-computed kernels, scipy's B-spline, the projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from diffsr.config import DegradationConfig, load_config
from diffsr.core.errors import ConfigError
from diffsr.data.datasets import ImageItem, SRDataset, collate_pad
from diffsr.data.degrade import DEGRADATIONS, build_degradation
from diffsr.data.slice_profile import SliceProfile, bspline_matrix, check_profile, slice_centres


def test_rect_kernel_matches_the_hand_computed_overlaps() -> None:
    # factor 2 on 4 pixels: slice centres at 0.5 and 2.5; a rect of width 3 covers [-1, 2] and
    # [1, 4]. Pixel n is the box [n - 0.5, n + 0.5]: slice 0 overlaps pixel -1 by 0.5 (outside,
    # dropped), pixels 0 and 1 by 1, pixel 2 by 0.5 -> (1, 1, 0.5) / 2.5
    d = SliceProfile(2.0, thickness=3.0, profile="rect").matrix(4)
    expected = torch.tensor([[0.4, 0.4, 0.2, 0.0], [0.0, 0.2, 0.4, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-12)


def test_gaussian_kernel_with_a_non_integer_factor_matches_the_pixel_integrals() -> None:
    # factor 2.5, FWHM 2.5 on 5 pixels: centres (k + 0.5) 2.5 - 0.5 = 0.75 and 3.25; the weight
    # of pixel n is Phi((n + 0.5 - c) / sigma) - Phi((n - 0.5 - c) / sigma), sigma = 2.5 / 2.3548
    sigma = 2.5 / (2 * math.sqrt(2 * math.log(2)))

    def phi(v: float) -> float:
        return 0.5 * (1 + math.erf(v / math.sqrt(2)))

    d = SliceProfile(2.5, profile="gaussian").matrix(5)
    assert d.shape == (2, 5)
    for k, c in enumerate((0.75, 3.25)):
        row = np.array([phi((n + 0.5 - c) / sigma) - phi((n - 0.5 - c) / sigma) for n in range(5)])
        np.testing.assert_allclose(d[k].numpy(), row / row.sum(), rtol=0, atol=1e-12)
    # slice 0 from a normal table: the pixel edges -0.5 .. 4.5 minus 0.75, over sigma 1.0617, are
    # z = -1.177, -0.235, 0.706, 1.648, 2.590, 3.532; Phi(z) = 0.1195, 0.4069, 0.7600, 0.9504,
    # 0.9952, 0.9998; differences 0.2874, 0.3531, 0.1903, 0.0448, 0.0046 (sum 0.8803, the rest
    # of the Gaussian lies left of the image), divided by their sum:
    np.testing.assert_allclose(d[0].numpy(), [0.3265, 0.4012, 0.2162, 0.0509, 0.0052], atol=1e-4)


def test_sampled_profile_gives_its_samples_at_integer_centres() -> None:
    # factor 3 on 9 pixels: centres 1, 4, 7; the samples (1, 2, 3, 2, 1) sit at offsets -2..2;
    # slice 0 loses offset -2 (pixel -1) and is renormalised over 2 + 3 + 2 + 1 = 8
    d = SliceProfile(3.0, profile=(1, 2, 3, 2, 1)).matrix(9)
    torch.testing.assert_close(d[1], torch.tensor([0, 0, 1, 2, 3, 2, 1, 0, 0], dtype=torch.float64) / 9)
    torch.testing.assert_close(d[0], torch.tensor([2, 3, 2, 1, 0, 0, 0, 0, 0], dtype=torch.float64) / 8)


def test_slice_centres_share_the_first_edge_with_the_fine_grid() -> None:
    c = slice_centres(20, 4.8)  # floor(20 / 4.8) = 4 slices, the first covering [-0.5, 4.3]
    torch.testing.assert_close(c, torch.tensor([1.9, 6.7, 11.5, 16.3], dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 3, 7, 16])
def test_bspline_matrix_matches_scipy_map_coordinates(k: int) -> None:
    rng = np.random.default_rng(k)
    y = rng.random(k)
    positions = np.linspace(-1.4, k + 0.4, 53)  # inside and beyond both ends (mirrored)
    expected = ndimage.map_coordinates(y, [positions], order=3, mode="mirror")
    got = bspline_matrix(torch.from_numpy(positions), k) @ torch.from_numpy(y)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_degradation_acts_along_one_axis_only() -> None:
    deg = build_degradation(DegradationConfig(name="slice_profile", factor=4.8, axis=0), 1)
    cols = torch.rand(1, 1, 1, 40, dtype=torch.float64).expand(1, 1, 48, 40)  # varies across columns only
    torch.testing.assert_close(deg.degrade(cols, None), cols, rtol=0, atol=1e-12)
    rows = cols.transpose(-1, -2)  # varies down the rows: the degraded axis
    lr, thick = deg.measure(rows.float())
    assert lr.shape == rows.shape and thick.shape == (1, 1, 8, 48)  # floor(40 rows / 4.8) = 8 slices
    assert not torch.allclose(lr.double(), rows, atol=1e-3)
    assert deg.upsample(lr) is lr


def test_thick_slices_count_and_axis_one() -> None:
    deg = build_degradation(DegradationConfig(name="slice_profile", factor=3.5, thickness=2.5, axis=1), 1)
    hr = torch.rand(2, 1, 16, 35)
    lr, thick = deg.measure(hr)
    assert thick.shape == (2, 1, 16, 10) and lr.shape == hr.shape
    torch.testing.assert_close(thick, SliceProfile(3.5, 2.5).degrade(hr, -1))


def test_projection_reproduces_the_thick_slices_and_keeps_a_consistent_image() -> None:
    profile = SliceProfile(4.8, thickness=3.8)
    truth = torch.rand(2, 1, 64, 9, dtype=torch.float64)
    y = profile.degrade(truth, -2)
    guess = torch.rand_like(truth)
    fixed = profile.project(guess, y, -2)
    torch.testing.assert_close(profile.degrade(fixed, -2), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(profile.project(truth, y, -2), truth, rtol=0, atol=1e-12)  # already consistent
    torch.testing.assert_close(profile.project(fixed, y, -2), fixed, rtol=0, atol=1e-12)  # idempotent


def test_profile_checks_name_the_expected_length() -> None:
    with pytest.raises(ValueError, match="odd number of samples from 3 to 17"):
        check_profile([1, 2, 3, 4], 2.0)
    with pytest.raises(ValueError, match="odd number"):
        check_profile([1.0] * 19, 2.0)
    with pytest.raises(ValueError, match="positive"):
        check_profile([0, 0, 0], 2.0)
    assert check_profile([0, 1, 0], 2.0) == (0.0, 1.0, 0.0)


def test_config_scale_rules_for_one_axis_degradations() -> None:
    assert DEGRADATIONS.caps("slice_profile").one_axis and not DEGRADATIONS.caps("bicubic").one_axis
    cfg = load_config("edsr", ["data.scale=1", "data.degradation.name=slice_profile", "data.degradation.factor=4.8"])
    assert cfg.data.scale == 1 and cfg.data.degradation.factor == 4.8
    with pytest.raises(ConfigError, match="scale 4 does not apply with the one-axis degradation 'slice_profile'"):
        load_config("edsr", ["data.degradation.name=slice_profile", "data.degradation.factor=4.8"])
    with pytest.raises(ConfigError, match="scale 1 .* needs a one-axis degradation"):
        load_config("edsr", ["data.scale=1"])
    with pytest.raises(ConfigError, match="'data.degradation.factor' for degradation 'bicubic'"):
        load_config("edsr", ["data.degradation.factor=4"])
    with pytest.raises(ConfigError, match="patch_size >= 48"):
        load_config("edsr", ["data.scale=1", "data.degradation.name=slice_profile", "data.degradation.factor=12",
                             "data.patch_size=32"])


def test_config_without_scale_defaults_to_one_for_slice_profile() -> None:
    from diffsr.config import validate

    cfg = validate({"data": {"degradation": {"name": "slice_profile", "factor": 4}}})
    assert cfg.data.scale == 1
    assert validate(cfg.model_dump(mode="json")).data == cfg.data  # a saved config reloads unchanged


def test_dataset_pairs_lie_on_the_hr_grid() -> None:
    deg = build_degradation(DegradationConfig(name="slice_profile", factor=4.0), 1)
    rng = np.random.default_rng(0)
    items = [ImageItem(f"s{i}", hr=rng.random((1, 40, 48)).astype(np.float32)) for i in range(3)]
    data = SRDataset(items, scale=1, patch_size=32, degradation=deg, seed=0)
    batch = collate_pad([data[i] for i in range(3)])
    assert batch["hr"].shape == batch["lr"].shape == batch["lr_up"].shape == (3, 1, 32, 32)
    torch.testing.assert_close(batch["lr"], batch["lr_up"])
    # the LR is the hr's thick slices interpolated back (clamped)
    expected = SliceProfile(4.0).interpolate(SliceProfile(4.0).degrade(batch["hr"], -2), -2, 32).clamp(0, 1)
    torch.testing.assert_close(batch["lr"], expected, rtol=0, atol=1e-6)
